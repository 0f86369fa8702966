"""Reading plain text files for language models: UTF-8, NFC, ``\\n`` line ends, errors naming the file."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from elman.data.reader import DataError, decode_utf8

MAX_TEXT_BYTES = 1 << 30  # a character model reads the whole file into memory


def read_text(path: str | Path) -> str:
    """The whole file as one NFC-normalised string with ``\\n`` line ends.

    Raises ``DataError`` for a missing, empty, binary (NUL bytes), non-UTF-8 or oversized file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise DataError(f"{path}: {size} bytes; the limit for a text file is {MAX_TEXT_BYTES} bytes")
    data = path.read_bytes()
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: contains a NUL byte; this looks like a binary file, not text")
    text = decode_utf8(path, data).replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DataError(f"{path}: the file is empty; a language model needs text to learn from")
    return unicodedata.normalize("NFC", text)


def read_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a text file, stripped: one sequence each, for line-oriented models."""
    lines = [line.strip() for line in read_text(path).split("\n")]
    return [line for line in lines if line]
