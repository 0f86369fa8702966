"""A language model's corpus as tensors, made once: one long text (ids), or separate lines (ids, lengths and
conditions), each split into training, validation and a held-out part to calibrate on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from elman.data.reader import DataError, LabelledTexts, read_labelled_csv
from elman.data.splits import stratified_split
from elman.data.text import read_lines
from elman.data.vocabulary import Vocabulary, vectorize
from elman.errors import UsageError

MIN_CALIBRATION_CHARACTERS = 1000  # held out to fit the output's temperature; fewer would leave it to chance


@dataclass
class LanguageData:
    """A language-model corpus turned into tensors once. Long text: ``train``/``val``/``calibration`` are
    ``(N,)`` ids. Lines: each is ``(ids (N, T), lengths (N,), conditions (N,) or None)``."""

    vocabulary: Vocabulary
    kind: str  # "text" or "lines"
    train: tuple
    val: tuple
    calibration: tuple | None = None  # held out of the training data to fit the output's temperature
    conditions: list[str] | None = None  # the labels a conditioned model is steered by
    source: str = ""
    columns: dict | None = None  # CSV lines: {"text": ..., "condition": ...}, for evaluating on the same layout

    @property
    def train_characters(self) -> int:
        return self.train[0].shape[0] if self.kind == "text" else int(self.train[1].sum()) - 2 * len(self.train[1])


def check_calibration_fraction(fraction: float) -> None:
    if not 0 <= fraction < 0.5:
        raise UsageError(f"calibration_fraction must be at least 0 and below 0.5, got {fraction}")


def prepare_text(text: str, val_text: str | None = None, val_fraction: float = 0.1, source: str = "",
                 calibration_fraction: float = 0.0) -> LanguageData:
    """A long text, validated on ``val_text`` or else on its last ``val_fraction``; the first
    ``calibration_fraction`` of what remains is held out of training to calibrate on. (Not the part just
    before the validation text: that often shares its scene and speakers, and holding out tiny-shakespeare's
    last 2% of training text cost the validation loss 0.09 nats/char.)"""
    check_calibration_fraction(calibration_fraction)
    if val_text is None:
        if not 0 < val_fraction < 1:
            raise UsageError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        cut = int(len(text) * (1 - val_fraction))
        text, val_text = text[:cut], text[cut:]
    if len(text) < 2 or len(val_text) < 2:
        raise DataError(f"{source}: too little text ({len(text)} characters to train on, {len(val_text)} to "
                        "validate on); a language model needs at least two of each")
    held_out = int(len(text) * calibration_fraction)
    if held_out < MIN_CALIBRATION_CHARACTERS or len(text) - held_out < 2:  # too little: train on it all
        held_out = 0
    calibration_text, train_text = text[:held_out], text[held_out:]
    vocabulary = Vocabulary.from_texts([train_text])
    return LanguageData(vocabulary, "text", train=(torch.tensor(vocabulary.indices(train_text)),),
                        val=(torch.tensor(vocabulary.indices(val_text)),),
                        calibration=(torch.tensor(vocabulary.indices(calibration_text)),) if held_out else None,
                        source=source)


def prepare_lines(data: LabelledTexts, conditioned: bool, val_fraction: float = 0.1, max_length: int = 64,
                  seed: int = 0, calibration_fraction: float = 0.0) -> LanguageData:
    """Separate lines (CSV rows or lines of a text file). The file's train/val split is used when it has
    one; otherwise a seeded ``val_fraction`` of the lines (per label, when conditioned) is held out. A
    seeded ``calibration_fraction`` of the training lines (per label) is held out of training to calibrate
    on."""
    check_calibration_fraction(calibration_fraction)
    if conditioned and data.labels is None:
        raise DataError(f"{data.path}: a conditioned model needs a condition column")
    strata = data.labels if conditioned else [""] * len(data)
    if data.splits is not None:
        splits = data.splits
    else:
        if not 0 < val_fraction < 1:
            raise UsageError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        splits = stratified_split(strata, (1 - val_fraction, val_fraction, 0.0), seed)
    rows = {name: [i for i, s in enumerate(splits) if s == name] for name in ("train", "val")}
    if not rows["train"] or not rows["val"]:
        raise DataError(f"{data.path}: training needs lines in both the train and the val split (found "
                        f"{len(rows['train'])} and {len(rows['val'])})")
    held_out = stratified_split([strata[i] for i in rows["train"]], (1 - calibration_fraction, calibration_fraction,
                                                                   0.0), seed)
    rows["calibration"] = [i for i, s in zip(rows["train"], held_out, strict=True) if s == "val"]
    if sum(len(data.texts[i]) + 1 for i in rows["calibration"]) >= MIN_CALIBRATION_CHARACTERS:  # each line and its end
        rows["train"] = [i for i, s in zip(rows["train"], held_out, strict=True) if s == "train"]
    else:  # too little to fit on: train on it all
        rows["calibration"] = []
    vocabulary = Vocabulary.from_texts(data.texts[i] for i in rows["train"])
    labels = sorted({data.labels[i] for i in rows["train"]}) if conditioned else None
    if labels is not None:
        unseen = sorted({data.labels[i] for i in rows["val"]} - set(labels))
        if unseen:
            raise DataError(f"{data.path}: conditions {unseen} occur in val but never in train")

    def tensors(chosen: list[int]) -> tuple:
        ids, lengths = vectorize([data.texts[i] for i in chosen], vocabulary, max_length + 2)
        index = {label: k for k, label in enumerate(labels or [])}
        conditions = torch.tensor([index[data.labels[i]] for i in chosen]) if labels else None
        return ids, lengths, conditions

    columns = {"text": data.text_column, "condition": data.label_column if conditioned else None}
    return LanguageData(vocabulary, "lines", train=tensors(rows["train"]), val=tensors(rows["val"]),
                        calibration=tensors(rows["calibration"]) if rows["calibration"] else None,
                        conditions=labels, source=data.path, columns=columns)


def read_lines_file(path: str | Path, text_column: str | None = None, condition_column: str | None = None,
                    split_column: str | None = None) -> LabelledTexts:
    """Separate lines: the rows of a CSV file (``.csv``, or any file when a column is named), else the
    non-empty lines of a text file."""
    path = Path(path)
    if path.suffix.lower() == ".csv" or text_column or condition_column or split_column:
        return read_labelled_csv(path, text_column, condition_column, split_column,
                                 require_labels=condition_column is not None)
    texts = read_lines(path)
    return LabelledTexts(str(path), texts, None, None, 0, "line", None, None)
