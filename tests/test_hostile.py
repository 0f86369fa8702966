"""Hostile input: random bytes, huge lines, NUL bytes, mixed encodings, right-to-left and combining
characters, empty and one-row files, nonsense command lines. Each ends in a correct result or a clear
error (one line, exit code 2 from the command line), never a traceback or a half-written output file.
The number of cases tried is printed at the end of the test run ("hostile-input suite: ...")."""

import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import elman
from elman.cli import main
from elman.data.reader import DataError, read_labelled_csv
from elman.data.text import read_text
from elman.data.vocabulary import Vocabulary, vectorize

PIECES = [
    "surname", "nationality", "split", "train", "val", "test", ",", "\n", "\r\n", '"', '""', "Nakamoto", "Ivanova",
    "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\u202e", "\u200d", "e\u0301\u0301\u0301",
    "\ufeff", "\x00", " ", "\t", "x" * 5000, "\U0001f600", "\ud7ff",
]
RAW = [b"\xff\xfe", b"\xe9", b"\xc3\xa9", b"\x80", b"\xef\xbb\xbf"]  # stray Latin-1, UTF-8, BOM bytes
HOSTILE_FILES = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from(PIECES).map(str.encode) | st.sampled_from(RAW), max_size=40).map(b"".join),
    st.lists(st.sampled_from(PIECES), max_size=40).map(lambda parts: "".join(parts).encode()),
)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def count(cases, name):
    cases[name] = cases.get(name, 0) + 1


@contextmanager
def written(content: bytes, name: str):
    """A file holding ``content``, in a fresh directory that is removed afterwards."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(content)
        yield path


@SETTINGS
@given(HOSTILE_FILES)
def test_csv_reader_gives_rows_or_a_data_error(hostile_cases, content):
    count(hostile_cases, "csv")
    with written(content, "hostile.csv") as path:
        try:
            data = read_labelled_csv(path, require_labels=False)
        except DataError as error:
            assert str(path) in str(error) and "\n" not in str(error).strip()
            return
        assert data.texts and all(text and text == text.strip() for text in data.texts)
        ids, lengths = vectorize(data.texts, Vocabulary.from_texts(data.texts), 32)
        assert ids.shape[0] == len(data.texts) and int(lengths.max()) <= 32


@SETTINGS
@given(HOSTILE_FILES)
def test_text_reader_gives_text_or_a_data_error(hostile_cases, content):
    count(hostile_cases, "text")
    with written(content, "hostile.txt") as path:
        try:
            text = read_text(path)
        except DataError as error:
            assert str(path) in str(error)
            return
        assert "\x00" not in text and "\r" not in text


@SETTINGS
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=20), min_size=1, max_size=5).map("".join))
def test_models_answer_or_refuse_any_text(hostile_cases, trained_model, trained_lm, text):
    count(hostile_cases, "model input")
    classifier, generator = elman.load(trained_model[0]), elman.load(trained_lm[0])
    for call in (lambda: classifier.predict(text), lambda: classifier.inspect(text),
                 lambda: generator.generate(text, length=3, seed=0), lambda: generator.inspect(text)):
        try:
            result = call()
        except ValueError as error:
            assert str(error)
        else:
            assert result is not None


ARGUMENTS = st.sampled_from([
    "train", "evaluate", "predict", "generate", "inspect", "--task", "lm", "classify", "--data", "--out", "--model",
    "--epochs", "0", "-1", "1e9", "nan", "--top-k", "--top-p", "2", "--temperature", "-5", "--length", "--seed",
    "--prime", "\u202e\x00", "--condition", "--input", "--output", "--json", "--resume", "--time-budget", "--lines",
    "--val-fraction", "1.5", "--max-length", "--batch-size", "\U0001f600", "--no-such-flag", "",
])


@SETTINGS
@given(st.lists(ARGUMENTS, max_size=8))
def test_command_line_never_shows_a_traceback(hostile_cases, trained_model, trained_lm, tmp_path, capsys, argv):
    count(hostile_cases, "command line")
    hostile = tmp_path / "hostile.csv"
    hostile.write_bytes(b"surname,nationality\n\xff\xfe\x00,x\n")
    replace = {"--data": str(hostile), "--out": str(tmp_path / "out"), "--input": str(hostile),
               "--output": str(tmp_path / "predictions.csv"), "--resume": str(tmp_path / "out")}
    concrete = []
    for argument in argv:
        concrete.append(argument)
        if argument == "--model":
            concrete.append(str(trained_model[0] if len(concrete) % 2 else trained_lm[0]))
        elif argument in replace:
            concrete.append(replace[argument])
    if concrete and concrete[0] == "train":
        concrete += ["--epochs", "1", "--time-budget", "1"]  # a valid file would train, briefly
    try:
        code = main(concrete)
    except SystemExit as exit_:  # argparse: usage errors and --help
        code = exit_.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code in (0, 2), (concrete, captured.err)
    if code == 2 and "usage:" not in captured.err:
        assert captured.err.startswith("elman ") and ": error: " in captured.err
    leftovers = [p for p in tmp_path.rglob(".*.tmp")]
    assert not leftovers, leftovers
    assert not (tmp_path / "predictions.csv").exists() or (tmp_path / "predictions.csv").read_text().startswith(
        "text,prediction")


@pytest.mark.parametrize("content", [b"", b"surname,nationality\n", b"surname,nationality\nSato,Japanese\n"])
def test_empty_and_one_row_files_cannot_train(tmp_path, capsys, content):
    path = tmp_path / "small.csv"
    path.write_bytes(content)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
