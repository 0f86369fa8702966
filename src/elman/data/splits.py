"""A seeded, stratified train/val/test split for files that bring none."""

from __future__ import annotations

import random
from collections import defaultdict

from elman.errors import UsageError


def stratified_split(labels: list[str], fractions=(0.7, 0.15, 0.15), seed: int = 0) -> list[str]:
    """One of "train", "val", "test" per row, each label divided in the given fractions (rounded, with
    at least one training row per label)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise UsageError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = random.Random(seed)
    rows_by_label = defaultdict(list)
    for row, label in enumerate(labels):
        rows_by_label[label].append(row)
    splits = [""] * len(labels)
    for label in sorted(rows_by_label):
        rows = rows_by_label[label]
        rng.shuffle(rows)
        n_val = round(len(rows) * fractions[1])
        n_test = round(len(rows) * fractions[2])
        if n_val + n_test >= len(rows):
            n_val, n_test = (len(rows) - 1) // 2, (len(rows) - 1) - (len(rows) - 1) // 2
        for i, row in enumerate(rows):
            splits[row] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return splits
