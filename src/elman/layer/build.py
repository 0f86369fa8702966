"""Finding the compiled loops (``_loops.cpp``): built at install time, or else on first use.

``pip install --no-build-isolation .`` builds ``elman.layer._loops`` against the installed torch. A plain
``pip install .`` builds in an isolated environment without torch, so nothing is compiled then; the first
``import elman`` compiles the same file with ``torch.utils.cpp_extension`` against the torch that is running,
once, into a cache directory per torch and Python version (about a minute on two cores), and later imports
load it from there. Where there is no compiler, one warning says that the Python loop runs and how to get
the compiled one.

    ELMAN_CACHE_DIR     where builds are cached (default: $XDG_CACHE_HOME/elman, or ~/.cache/elman)
    ELMAN_BUILD=0       never compile on first use (the installed build or the Python loop)
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).with_name("_loops.cpp")
OPENMP = ["-fopenmp"] if sys.platform == "linux" else []  # as setup.py: parallel_for on torch's threads


def cache_directory() -> Path:
    """The build directory of this ``_loops.cpp``, torch and Python."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    root = os.environ.get("ELMAN_CACHE_DIR") or Path(cache) / "elman"
    source = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(root) / f"torch-{torch.__version__}-{python}-{source}"


def load_compiled_loops() -> ModuleType | None:
    """The compiled module: the one built at install time, a cached build, or a build made now."""
    try:
        from elman.layer import _loops
    except ImportError:  # not built at install time, or built against another torch
        pass
    else:
        return _loops
    if os.environ.get("ELMAN_BUILD") == "0" or not SOURCE.exists():
        return None
    return _build_on_first_use()


def _build_on_first_use() -> ModuleType | None:
    from torch.utils import cpp_extension

    directory = cache_directory()
    name = "elman_loops"
    if not any(directory.glob(f"{name}*.so")):
        print(f"elman: compiling the recurrence loops for torch {torch.__version__} into {directory} "
              "(once, about a minute)", file=sys.stderr, flush=True)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=["-O3", *OPENMP],
                                  extra_ldflags=OPENMP, build_directory=str(directory), verbose=False)
    except Exception as error:  # no compiler, no ninja, a read-only cache, a torch without MKL's symbols...
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        warnings.warn(
            f"elman: the compiled recurrence loops could not be built ({reason}); the layer runs its Python "
            "loop, several times slower on small batches. Install a C++ compiler (e.g. apt-get install g++) and "
            "ninja (pip install ninja), then import elman again; `elman info` shows what is loaded.",
            RuntimeWarning, stacklevel=3)
        return None
