"""The compiled loops on a plain install: built on first use against the running torch, cached, and where that
cannot be done, one warning and the Python loops."""

import os
import subprocess
import sys

import pytest

# Runs in a fresh interpreter in which the loops built at install time cannot be imported, as after a plain
# `pip install .` (isolated build, no torch there), and reports what the layer loaded.
WITHOUT_INSTALLED_BUILD = """
import sys, warnings
sys.modules["elman.layer._loops"] = None  # importing it now raises ImportError
warnings.simplefilter("always")
import elman
from elman.layer import fused
print("loaded:", None if fused.compiled_loops is None else fused.compiled_loops.__file__)
"""


def run(tmp_path, **environment):
    env = {name: value for name, value in os.environ.items() if name != "ELMAN_BUILD"}
    env.update(ELMAN_CACHE_DIR=str(tmp_path / "cache"), **environment)
    return subprocess.run([sys.executable, "-c", WITHOUT_INSTALLED_BUILD], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_first_import_builds_the_loops_once_and_later_imports_load_them(tmp_path):
    first = run(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "elman: compiling the recurrence loops" in first.stderr
    assert f"loaded: {tmp_path / 'cache'}" in first.stdout
    second = run(tmp_path)
    assert "compiling" not in second.stderr and f"loaded: {tmp_path / 'cache'}" in second.stdout


def test_without_a_compiler_one_warning_says_the_python_loop_runs(tmp_path):
    result = run(tmp_path, CXX="/nonexistent/c++")
    assert result.returncode == 0, result.stderr
    assert "loaded: None" in result.stdout
    assert result.stderr.count("could not be built") == 1 and "Install a C++ compiler" in result.stderr


def test_elman_build_0_never_compiles(tmp_path):
    result = run(tmp_path, ELMAN_BUILD="0")
    assert "loaded: None" in result.stdout and "compiling" not in result.stderr
    assert not (tmp_path / "cache").exists()
