import statistics

import pytest
import torch

from elman.datasets import elman1990 as corpora


def test_xor_stream_is_triplets_whose_third_bit_is_the_xor():
    stream = corpora.temporal_xor(3000, seed=5)
    assert stream.shape == (3000,)
    triplets = stream.view(-1, 3).long()
    assert torch.equal(triplets[:, 2], triplets[:, 0] ^ triplets[:, 1])
    assert set(stream.unique().tolist()) == {0.0, 1.0}


def test_xor_random_bits_are_roughly_balanced():
    pairs = corpora.temporal_xor(30000, seed=0).view(-1, 3)[:, :2]
    assert abs(pairs.mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("bits", [0, -3, 10])
def test_xor_stream_length_must_be_a_positive_multiple_of_three(bits):
    with pytest.raises(ValueError, match="positive multiple of 3"):
        corpora.temporal_xor(bits)


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: corpora.temporal_xor(300, seed=seed).tolist(),
        lambda seed: corpora.letter_stream(100, seed=seed),
        lambda seed: corpora.word_sentences(50, seed=seed),
        lambda seed: corpora.sentence_corpus(200, seed=seed),
    ],
    ids=["xor", "letters", "words", "sentences"],
)
def test_every_generator_is_deterministic_under_a_seed(make):
    assert make(1) == make(1)
    assert make(1) != make(2)


def test_letter_stream_expands_each_consonant_to_its_syllable():
    text = corpora.letter_stream(1000, seed=3)
    consonants = [c for c in text if c in "bdg"]
    assert len(consonants) == 1000
    assert text == "".join(corpora.SYLLABLES[c] for c in consonants)
    assert 2800 < len(text) < 3200  # mean 3 letters per consonant


def test_letter_features_are_table_1():
    features = corpora.encode_letters("bdgaiu")
    consonant, high = corpora.FEATURE_NAMES.index("consonant"), corpora.FEATURE_NAMES.index("high")
    assert features[:, consonant].tolist() == [1, 1, 1, 0, 0, 0]
    assert features[:, high].tolist() == [0, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"letters \['x'\] have no feature vector"):
        corpora.encode_letters("bax")


def test_word_corpus_matches_the_papers_statistics():
    """200 sentences of 4-9 words; the paper: 1,270 words and 4,963 letters."""
    words, letters = [], []
    for seed in range(20):
        sentences = corpora.word_sentences(200, seed=seed)
        assert len(sentences) == 200
        assert all(4 <= len(s) <= 9 for s in sentences)
        words.append(sum(len(s) for s in sentences))
        letters.append(sum(len(w) for s in sentences for w in s))
    assert 1200 < statistics.mean(words) < 1340
    assert 4700 < statistics.mean(letters) < 5050
    vocabulary = {w for seed in range(5) for s in corpora.word_sentences(200, seed=seed) for w in s}
    assert len(vocabulary) == 15


def test_letter_codes_are_the_alphabet_positions_of_table_2():
    codes = corpora.letter_codes("abmy")
    assert codes == {"a": (0, 0, 0, 0, 1), "b": (0, 0, 0, 1, 0), "m": (0, 1, 1, 0, 1), "y": (1, 1, 0, 0, 1)}
    random_codes = corpora.letter_codes("abcdefg", scheme="random", seed=1)
    assert len(set(random_codes.values())) == 7


def test_sentence_corpus_matches_the_papers_statistics():
    """10,000 sentences from 16 templates: 2.75 words per sentence, i.e. 27,500 +- 43 words."""
    sentences = corpora.sentence_corpus(10_000, seed=0)
    total = sum(len(s) for s in sentences)
    assert 27_500 - 4 * 43 < total < 27_500 + 4 * 43
    assert {len(s) for s in sentences} == {2, 3}
    assert {w for s in sentences for w in s} == set(corpora.WORDS)
    assert len(corpora.WORDS) == 29 and len(corpora.VOCABULARY) == 31


def test_every_sentence_instantiates_a_template_of_table_4():
    categories = corpora.PRESETS["elman1990"]
    for sentence in corpora.sentence_corpus(500, seed=4):
        assert any(
            len(template) == len(sentence) and all(w in categories[c] for w, c in zip(sentence, template, strict=True))
            for template in corpora.TEMPLATES
        ), sentence


def test_zog_corpus_puts_zog_wherever_man_could_be():
    sentences = corpora.sentence_corpus(2000, seed=0, substitute={"man": "zog"})
    words = [w for s in sentences for w in s]
    assert "man" not in words and words.count("zog") > 100


def test_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of elman1990, table3_literal, ccm2023"):
        corpora.sentence_corpus(10, preset="mine")
