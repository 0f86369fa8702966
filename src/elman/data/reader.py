"""Reading labelled texts from CSV files, with errors that name the file, the line and the problem.

A file is UTF-8 (a byte-order mark is allowed) with a header row. Texts are Unicode NFC-normalised and
stripped; empty texts are skipped and counted. Column names are configurable; by default the reader
recognises ``surname``/``nationality``/``split`` and ``text``/``label``/``split``.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from elman.errors import UsageError

TEXT_COLUMNS = ("surname", "text")
LABEL_COLUMNS = ("nationality", "label")
SPLIT_COLUMNS = ("split",)
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
MAX_FIELD_CHARS = 100_000


class DataError(UsageError):
    """A data file cannot be used; the message names the file, the line (where there is one) and the fix."""


@dataclass
class LabelledTexts:
    path: str
    texts: list[str]
    labels: list[str] | None  # None when the file has no label column and none was required
    splits: list[str] | None  # "train" / "val" / "test" per row; None without a split column
    skipped_empty: int  # rows whose text was empty after normalisation
    text_column: str
    label_column: str | None
    split_column: str | None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, split: str) -> tuple[list[str], list[str]]:
        """(texts, labels) of one split."""
        if self.splits is None or self.labels is None:
            raise UsageError(f"{self.path} has no split or no label column")
        rows = [i for i, s in enumerate(self.splits) if s == split]
        return [self.texts[i] for i in rows], [self.labels[i] for i in rows]


def normalise_text(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def _decode_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{data[error.start]:02x}); save the file as UTF-8"
        ) from None


def read_utf8(path: Path, empty: str, binary: str, max_bytes: int | None = None) -> str:
    """The decoded contents of a text file. ``DataError`` for a missing, oversized, binary (NUL bytes),
    non-UTF-8 or blank file; ``empty`` and ``binary`` finish those two messages for the kind of file."""
    if not path.is_file():
        raise DataError(f"{path}: a directory, not a file" if path.is_dir() else f"{path}: no such file")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DataError(f"{path}: {size} bytes; the limit for this file is {max_bytes} bytes")
    data = path.read_bytes()
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: contains a NUL byte; {binary}")
    text = _decode_utf8(path, data)
    if not text.strip():
        raise DataError(f"{path}: the file is empty; {empty}")
    return text


def _pick_column(path: Path, header: list[str], wanted: str | None, defaults: tuple[str, ...], role: str,
                 option: str, required: bool) -> str | None:
    lowered = {name.strip().lower(): name for name in header}
    if wanted is not None:
        if wanted in header:
            return wanted
        if wanted.lower() in lowered:
            return lowered[wanted.lower()]
        raise DataError(f"{path}: no column {wanted!r} for the {role}; the columns are {header}")
    for name in defaults:
        if name in lowered:
            return lowered[name]
    if required:
        raise DataError(
            f"{path}: no {role} column (looked for {', '.join(defaults)}); the columns are {header}; "
            f"name it with {option}"
        )
    return None


def read_labelled_csv(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    require_labels: bool = True,
) -> LabelledTexts:
    """Read a CSV of texts with labels (and optionally a split per row).

    Raises ``DataError`` for a missing or empty file, bad encoding, malformed rows, missing columns,
    empty labels, unknown split names, no usable text, or (with labels) a single class.
    """
    path = Path(path)
    text = read_utf8(path, empty="expected a header row and at least one data row",
                     binary="this is not a text CSV file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:  # only blank lines of characters csv does not take for content
        raise DataError(f"{path}: the file is empty; expected a header row and at least one data row") from None
    except csv.Error as error:
        raise DataError(f"{path}: line 1: malformed header ({error})") from None
    header = [name.strip() for name in header]
    text_name = _pick_column(path, header, text_column, TEXT_COLUMNS, "text", "--text-column", True)
    label_name = _pick_column(path, header, label_column, LABEL_COLUMNS, "label", "--label-column", require_labels)
    split_name = _pick_column(path, header, split_column, SPLIT_COLUMNS, "split", "--split-column", False)
    position = {name: header.index(name) for name in (text_name, label_name, split_name) if name is not None}

    texts, labels, splits, skipped = [], [], [], 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({error})") from None
        line = reader.line_num
        if not row or all(not field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: line {line}: expected {len(header)} fields like the header, got {len(row)}")
        if any(len(field) > MAX_FIELD_CHARS for field in row):
            raise DataError(f"{path}: line {line}: a field is longer than {MAX_FIELD_CHARS} characters")
        text = normalise_text(row[position[text_name]])
        if not text:
            skipped += 1
            continue
        if label_name is not None:
            label = normalise_text(row[position[label_name]])
            if not label:
                raise DataError(f"{path}: line {line}: empty label in column {label_name!r}")
            labels.append(label)
        if split_name is not None:
            value = row[position[split_name]].strip().lower()
            if value not in SPLIT_NAMES:
                raise DataError(
                    f"{path}: line {line}: unknown split {row[position[split_name]]!r} in column {split_name!r}; "
                    f"use one of train, val, test"
                )
            splits.append(SPLIT_NAMES[value])
        texts.append(text)

    if not texts:
        empty = f" ({skipped} empty)" if skipped else ""
        raise DataError(f"{path}: no rows with text in column {text_name!r}{empty}")
    if label_name is not None and require_labels and len(set(labels)) < 2:
        raise DataError(f"{path}: every row has the label {labels[0]!r}; a classifier needs at least two labels")
    return LabelledTexts(
        path=str(path), texts=texts, labels=labels if label_name is not None else None,
        splits=splits if split_name is not None else None, skipped_empty=skipped,
        text_column=text_name, label_column=label_name, split_column=split_name,
    )
