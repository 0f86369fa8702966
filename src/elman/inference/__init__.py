"""Loading a checkpoint directory into a ready object: a ``Classifier`` (``.predict``) or a
``TextGenerator`` (``.generate``), whichever task the checkpoint was trained for."""

from __future__ import annotations

from pathlib import Path

from elman.checkpoint import CheckpointError, load_checkpoint
from elman.inference.classifier import Classifier, Prediction, load_classifier
from elman.inference.generator import TextGenerator, load_generator

LOADERS = {"classify": load_classifier, "lm": load_generator}


def load(directory: str | Path) -> Classifier | TextGenerator:
    """Load a checkpoint directory written by ``elman train`` (any task)."""
    directory = Path(directory)
    config, state, vocabulary = load_checkpoint(directory)
    task = config.get("task")
    if task not in LOADERS:
        raise CheckpointError(f"{directory / 'config.json'}: unknown task {task!r}; this elman knows {list(LOADERS)}")
    return LOADERS[task](directory, config, state, vocabulary)


__all__ = ["Classifier", "Prediction", "TextGenerator", "load"]
