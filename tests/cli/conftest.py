import io
import subprocess

import pytest

from elman.cli import main


@pytest.fixture
def cli(capsys, monkeypatch):
    """The command line run in this process, two seconds faster than a new one (torch's import): ``cli(*args)``
    -> a CompletedProcess with main's exit status (argparse's too) and what it printed; standard input empty.
    Anything main lets through (a user would see its traceback) fails the test."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit:
            status = exit.code
        printed = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, printed.out, printed.err)
    return run
