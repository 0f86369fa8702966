"""Task models built from the layer."""

from elman.models.classifier import ClassifierConfig, SequenceClassifier

__all__ = ["ClassifierConfig", "SequenceClassifier"]
