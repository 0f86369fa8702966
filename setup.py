"""Builds the optional compiled recurrence loop (src/elman/layer/_loops.cpp).

Everything else lives in pyproject.toml. The extension is optional: without torch in the build
environment, or without a compiler, the package installs and runs on its pure-Python loop.
"""

from setuptools import setup

ext_modules, cmdclass = [], {}
try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:  # isolated build without torch: pure-Python install
    pass
else:
    ext_modules = [
        CppExtension(
            "elman.layer._loops",
            ["src/elman/layer/_loops.cpp"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=True)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
