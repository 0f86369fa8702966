"""Readers, vocabularies, vectorizers, splits and batching: everything between a file and a tensor."""

from elman.data.reader import DataError, LabelledTexts, read_labelled_csv
from elman.data.vocabulary import Vocabulary, vectorize

__all__ = ["DataError", "LabelledTexts", "Vocabulary", "read_labelled_csv", "vectorize"]
