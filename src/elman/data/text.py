"""Reading plain text files for language models: UTF-8, NFC, ``\\n`` line ends, errors naming the file."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from elman.data.reader import read_utf8

MAX_TEXT_BYTES = 1 << 30  # a character model reads the whole file into memory


def read_text(path: str | Path) -> str:
    """The whole file as one NFC-normalised string with ``\\n`` line ends.

    Raises ``DataError`` for a missing, empty, binary (NUL bytes), non-UTF-8 or oversized file.
    """
    text = read_utf8(Path(path), empty="a language model needs text to read",
                     binary="this looks like a binary file, not text", max_bytes=MAX_TEXT_BYTES)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text)


def read_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a text file, stripped: one sequence each, for line-oriented models."""
    lines = [line.strip() for line in read_text(path).split("\n")]
    return [line for line in lines if line]
