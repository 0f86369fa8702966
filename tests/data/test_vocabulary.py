import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elman.data.batches import length_bucketed_batches, trim
from elman.data.splits import stratified_split
from elman.data.vocabulary import SPECIALS, Vocabulary, vectorize


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=20))
def test_encode_decode_round_trip_for_known_characters(texts):
    vocabulary = Vocabulary.from_texts(texts)
    for text in texts:
        ids = vocabulary.encode(text)
        assert ids[0] == 2 and ids[-1] == 3 and len(ids) == len(text) + 2
        assert vocabulary.decode(ids) == text


@given(st.text(max_size=30), st.text(max_size=30))
def test_unknown_characters_map_to_unk(seen, other):
    vocabulary = Vocabulary.from_texts([seen])
    ids = vocabulary.encode(other)
    for char, index in zip(other, ids[1:-1], strict=True):
        assert (index == 1) == (char not in seen)
    assert vocabulary.unknown_characters(other) == sorted(set(other) - set(seen))


@given(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=10))
def test_vocabulary_json_round_trip(texts):
    vocabulary = Vocabulary.from_texts(texts)
    assert Vocabulary.from_json(vocabulary.to_json()) == vocabulary


def test_vocabulary_rejects_malformed_json():
    with pytest.raises(ValueError, match="list of strings"):
        Vocabulary.from_json({"tokens": "abc"})
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary.from_json({"tokens": ["a", "b"]})
    with pytest.raises(ValueError, match="each token once"):
        Vocabulary.from_json({"tokens": [*SPECIALS, "a", "a"]})


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=15), st.integers(3, 50))
def test_vectorize_pads_and_cuts(texts, max_length):
    vocabulary = Vocabulary.from_texts(texts)
    ids, lengths = vectorize(texts, vocabulary, max_length)
    assert ids.shape == (len(texts), int(lengths.max()))
    for row, text in enumerate(texts):
        kept = min(len(text), max_length - 2)
        assert lengths[row] == kept + 2
        assert vocabulary.decode(ids[row, : lengths[row]].tolist()) == text[:kept]
        assert ids[row, lengths[row] :].eq(0).all()


def test_bucketed_batches_cover_every_row_once_and_group_similar_lengths():
    lengths = torch.randint(1, 30, (1000,))
    batches = length_bucketed_batches(lengths, 32, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 3
    again = length_bucketed_batches(lengths, 32, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    ids = torch.zeros(3, 10, dtype=torch.long)
    assert trim(ids, torch.tensor([2, 4, 3])).shape == (3, 4)


@given(st.lists(st.integers(1, 5_000), min_size=1, max_size=200), st.integers(1, 64), st.integers(1, 20_000))
@settings(max_examples=200, deadline=None)
def test_evaluation_batches_hold_at_most_max_tokens_unless_one_row_is_longer(lengths, batch_size, max_tokens):
    lengths = torch.tensor(lengths)
    batches = length_bucketed_batches(lengths, batch_size, max_tokens=max_tokens)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= batch_size and lengths[batch].tolist() == sorted(lengths[batch].tolist(), reverse=True)
        assert len(batch) == 1 or len(batch) * int(lengths[batch].max()) <= max_tokens
    assert [b.tolist() for b in length_bucketed_batches(lengths, batch_size, max_tokens=10**9)] == \
        [b.tolist() for b in length_bucketed_batches(lengths, batch_size)]  # short rows: batches as before


def test_stratified_split_keeps_each_label_in_proportion():
    labels = ["a"] * 100 + ["b"] * 20 + ["c"] * 3
    splits = stratified_split(labels, seed=1)
    for label, total in (("a", 100), ("b", 20)):
        rows = [s for s, lab in zip(splits, labels, strict=True) if lab == label]
        assert rows.count("val") == round(0.15 * total) and rows.count("test") == round(0.15 * total)
    assert "train" in [s for s, lab in zip(splits, labels, strict=True) if lab == "c"]
    assert stratified_split(labels, seed=1) == splits and stratified_split(labels, seed=2) != splits
