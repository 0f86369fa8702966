"""Text files for language models, and the batches a language model trains on."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elman.data.batches import line_batches, stream_batches
from elman.data.reader import DataError
from elman.data.text import read_lines, read_text
from elman.data.vocabulary import Vocabulary, vectorize


def write(tmp_path, content: bytes, name="text.txt"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_reads_utf8_with_nfc_and_unix_line_ends(tmp_path):
    path = write(tmp_path, "\ufeffline one\r\nMu\u0308ller\rend".encode())
    assert read_text(path) == "line one\nM\u00fcller\nend"
    assert read_lines(write(tmp_path, b"  a b \n\n \nc\n", "lines.txt")) == ["a b", "c"]


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b" \n\t\n", "the file is empty"),
    (b"text\nmore\x00binary", "line 2: contains a NUL byte; this looks like a binary file"),
    (b"caf\xe9\n", "line 1: not valid UTF-8 \\(byte 0xe9\\)"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=message) as error:
        read_text(path)
    assert str(path) in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "nothing.txt")


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 400), st.integers(1, 9), st.integers(1, 50), st.data())
def test_stream_batches_cover_the_text_in_order(size, batch_size, chunk_length, data):
    offset = data.draw(st.integers(0, size - 2))
    ids = torch.arange(size)
    batches = stream_batches(ids, batch_size, chunk_length, offset)
    inputs = torch.cat([b.inputs for b in batches], dim=1)
    targets = torch.cat([b.targets for b in batches], dim=1)
    assert torch.equal(targets, inputs + 1)  # every target is the next character
    streams, columns = inputs.shape
    # stream b continues where b - 1 ended, from the offset on
    assert torch.equal(inputs.reshape(-1), ids[offset : offset + streams * columns])
    left = size - offset
    assert streams == min(batch_size, left - 1) and left - 1 - streams * columns < streams  # little is dropped
    assert [b.continues for b in batches] == [False] + [True] * (len(batches) - 1)
    assert all(b.inputs.shape[1] <= chunk_length for b in batches)


def test_stream_batches_refuse_a_text_without_a_next_character():
    with pytest.raises(ValueError, match="nothing to predict"):
        stream_batches(torch.tensor([5]), 4, 8)
    with pytest.raises(ValueError, match="offset must leave two characters of the 3, got 2"):
        stream_batches(torch.tensor([5, 6, 7]), 4, 8, offset=2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=12), min_size=1, max_size=20),
       st.integers(1, 6))
def test_line_batches_read_bos_and_chars_and_predict_chars_and_eos(texts, batch_size):
    vocabulary = Vocabulary.from_texts(texts)
    ids, lengths = vectorize(texts, vocabulary, 64)
    conditions = torch.arange(len(texts))
    seen = []
    for batch in line_batches(ids, lengths, conditions, batch_size, torch.Generator().manual_seed(0)):
        for row, condition in enumerate(batch.conditions.tolist()):
            steps = int(batch.lengths[row])
            encoded = vocabulary.encode(texts[condition])
            assert batch.inputs[row, :steps].tolist() == encoded[:-1]
            assert batch.targets[row, :steps].tolist() == encoded[1:]
            assert not batch.targets[row, steps:].any()  # padding is never scored
            seen.append(condition)
        assert not batch.continues
    assert sorted(seen) == list(range(len(texts)))
