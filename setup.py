"""Builds the optional compiled recurrence loop (src/elman/layer/_loops.cpp).

Everything else lives in pyproject.toml. The extension is optional: without torch in the build
environment, or without a compiler, the package installs and runs on its pure-Python loop.
"""

import sys

from setuptools import setup

# OpenMP makes at::parallel_for run on torch's threads (without it the loops' parallel_for runs serially);
# the extension then shares torch's libgomp, already loaded under the same name.
OPENMP = ["-fopenmp"] if sys.platform == "linux" else []

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
            extra_compile_args=["-O3", *OPENMP],
            extra_link_args=OPENMP,
            optional=True,
        )
    ]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=True)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
