"""Files written atomically: what readers and other users find."""

import os

from elman.files import atomic_write_text


def test_written_files_respect_the_umask(tmp_path):
    """Outputs (reports, figures, models, predictions) get the mode any program's new file gets, not mkstemp's
    0600."""
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
