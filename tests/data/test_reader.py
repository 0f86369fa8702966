"""Every way a CSV file can be wrong ends in a DataError that names the file, the line and the problem."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elman.data.reader import DataError, read_labelled_csv


def write(tmp_path, content, name="data.csv"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_reads_the_surnames_layout_with_nfc_normalisation_and_counts_empty_texts(tmp_path):
    decomposed = "Mu\u0308ller"  # u + combining diaeresis
    path = write(tmp_path, f"surname,nationality,split\n{decomposed},German,train\n  ,German,val\nSato,Japanese,test\n")
    data = read_labelled_csv(path)
    assert data.texts == ["M\u00fcller", "Sato"]
    assert data.labels == ["German", "Japanese"]
    assert data.splits == ["train", "test"]
    assert data.skipped_empty == 1


def test_text_label_columns_are_recognised_and_configurable(tmp_path):
    path = write(tmp_path, "id,text,label\n1,abc,x\n2,def,y\n")
    data = read_labelled_csv(path)
    assert data.texts == ["abc", "def"] and data.splits is None
    other = write(tmp_path, "name,origin\nabc,x\ndef,y\n", "other.csv")
    assert read_labelled_csv(other, text_column="name", label_column="origin").labels == ["x", "y"]


def test_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfsurname,nationality\r\nAbe,Japanese\r\nSmith,English\r\n")
    assert read_labelled_csv(path).texts == ["Abe", "Smith"]


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "the file is empty"),
        (b"surname,nationality\nAbe,Japanese\nM\xfcller,German\n", r"line 3: not valid UTF-8 \(byte 0xfc\)"),
        (b"surname,nationality\nAbe,Jap\x00anese\n", "line 2: contains a NUL byte"),
        ("surname,nationality\nAbe,Japanese,extra\n", "line 2: expected 2 fields like the header, got 3"),
        ('surname,nationality\n"Abe,Japanese\n', "malformed CSV"),
        ("name,origin\nAbe,Japanese\n", r"no text column \(looked for surname, text\)"),
        ("surname,origin\nAbe,Japanese\n", "no label column"),
        ("surname,nationality\nAbe,\n", "line 2: empty label"),
        ("surname,nationality,split\nAbe,Japanese,holdout\n", "line 2: unknown split 'holdout'"),
        ("surname,nationality\nAbe,Japanese\nSato,Japanese\n", "a classifier needs at least two labels"),
        ("surname,nationality\n ,Japanese\n", r"no rows with text in column 'surname' \(1 empty\)"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=message) as error:
        read_labelled_csv(path)
    assert str(path) in str(error.value)


def test_missing_file_and_unknown_column_name(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_labelled_csv(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="a directory, not a file"):
        read_labelled_csv(tmp_path)
    path = write(tmp_path, "surname,nationality\nAbe,Japanese\nSmith,English\n")
    with pytest.raises(DataError, match="no column 'name' for the text"):
        read_labelled_csv(path, text_column="name")


def test_huge_field_is_refused(tmp_path):
    path = write(tmp_path, "surname,nationality\n" + "a" * 200_000 + ",x\nb,y\n")
    with pytest.raises(DataError, match="line 2"):
        read_labelled_csv(path)


def test_labels_are_optional_when_not_required(tmp_path):
    path = write(tmp_path, "surname\nAbe\nSato\n")
    data = read_labelled_csv(path, require_labels=False)
    assert data.texts == ["Abe", "Sato"] and data.labels is None


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_end_in_a_result_or_a_data_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "data.csv"
    path.write_bytes(b"surname,nationality\n" + content)
    try:
        data = read_labelled_csv(path)
    except DataError as error:
        assert str(path) in str(error)
    else:
        assert len(data.texts) == len(data.labels) >= 1
        assert all(text and text == text.strip() for text in data.texts)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.sampled_from(["a", "b", "c"])), min_size=2, max_size=20))
def test_written_rows_are_read_back(tmp_path_factory, rows):
    import csv
    import unicodedata

    path = tmp_path_factory.mktemp("rows") / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    expected = [(unicodedata.normalize("NFC", t).strip(), label) for t, label in rows]
    expected = [(t, label) for t, label in expected if t]
    try:
        data = read_labelled_csv(path)
    except DataError as error:  # all texts empty, a single label left, or a NUL character written
        assert any(reason in str(error) for reason in ("no rows with text", "at least two labels", "NUL byte"))
        return
    assert list(zip(data.texts, data.labels, strict=True)) == expected
