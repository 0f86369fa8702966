"""Files written atomically: what readers and other users find."""

import os

import torch

from elman.checkpoint import save_checkpoint
from elman.data.vocabulary import Vocabulary
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


def test_a_checkpoints_files_respect_the_umask(tmp_path):
    """safetensors writes its files 0600 by itself: a model saved by one user must still load for another."""
    previous = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "model", torch.nn.Linear(2, 3), Vocabulary.from_texts(["ab"]), {"task": "classify"})
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "model").iterdir()}
    assert modes == {"model.safetensors": 0o644, "vocab.json": 0o644, "config.json": 0o644}
