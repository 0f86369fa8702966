"""Generators for the corpora of J. L. Elman, "Finding Structure in Time", Cognitive Science 14 (1990).

Re-implemented from the project's specification (research notes, elman1990.md); every corpus is a
deterministic function of its seed. Where the paper leaves a choice open, the choice is an argument
and its default is the one the specification recommends.

1. ``temporal_xor``: random bit pairs, each followed by their XOR.
2. ``letter_stream``: random consonants b, d, g expanded to ba, dii, guuu; ``LETTER_FEATURES`` (Table 1).
3. ``word_sentences``: sentences over a 15-word lexicon. The paper gives neither the lexicon nor the
   grammar; this is a RECONSTRUCTION built to match its statistics (200 sentences of 4-9 words, about
   1,270 words and 4,900 letters).
4. ``sentence_corpus``: 2- and 3-word sentences from the 16 templates of Table 4 over 29 words.
"""

from __future__ import annotations

import random

import torch

from elman.errors import UsageError

# --- experiment 1 ------------------------------------------------------------------------------------


def temporal_xor(num_bits: int = 3000, seed: int = 0) -> torch.Tensor:
    """Elman's experiment 1: random bit pairs, each followed by their XOR, as one unbroken stream.

    Returns a float tensor of shape ``(num_bits,)`` holding 0.0/1.0; ``num_bits`` must be a positive
    multiple of 3 (the paper uses 3,000 bits, i.e. 1,000 triplets). Every third bit (positions 2, 5, 8,
    ... counting from 0) is the XOR of the two before it; the others are uniform random.
    """
    if num_bits <= 0 or num_bits % 3:
        raise UsageError(f"num_bits must be a positive multiple of 3, got {num_bits}")
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, 2, (num_bits // 3, 2), generator=generator)
    triplets = torch.cat([pairs, pairs[:, :1] ^ pairs[:, 1:]], dim=1)
    return triplets.reshape(-1).float()


# --- experiment 2 ------------------------------------------------------------------------------------

FEATURE_NAMES = ("consonant", "vowel", "interrupted", "high", "back", "voiced")
LETTER_FEATURES = {  # Table 1
    "b": (1, 0, 1, 0, 0, 1),
    "d": (1, 0, 1, 1, 0, 1),
    "g": (1, 0, 1, 0, 1, 1),
    "a": (0, 1, 0, 0, 1, 1),
    "i": (0, 1, 0, 1, 0, 1),
    "u": (0, 1, 0, 1, 1, 1),
}
SYLLABLES = {"b": "ba", "d": "dii", "g": "guuu"}


def letter_stream(num_consonants: int = 1000, seed: int = 0) -> str:
    """Experiment 2: ``num_consonants`` uniform random consonants, each expanded (b->ba, d->dii, g->guuu)."""
    if num_consonants <= 0:
        raise UsageError(f"num_consonants must be positive, got {num_consonants}")
    rng = random.Random(seed)
    return "".join(SYLLABLES[rng.choice("bdg")] for _ in range(num_consonants))


def encode_letters(text: str) -> torch.Tensor:
    """(N,) letters of b, d, g, a, i, u -> (N, 6) float feature vectors of Table 1."""
    unknown = sorted(set(text) - set(LETTER_FEATURES))
    if unknown:
        raise UsageError(f"letters {unknown} have no feature vector; known: {''.join(LETTER_FEATURES)}")
    return torch.tensor([LETTER_FEATURES[letter] for letter in text], dtype=torch.float32)


# --- experiment 3 (reconstruction) -------------------------------------------------------------------

ATTESTED_WORDS = ("many", "years", "ago", "a", "boy", "and", "girl", "lived", "by", "the", "sea", "they",
                  "played", "happily")
NOUN_PHRASES = ("a boy", "a girl", "the boy", "the girl", "a boy and girl", "the boy and girl", "they")
FIG6_PASSAGE = "many years ago a boy and girl lived by the sea they played happily"


def word_sentences(
    num_sentences: int = 200,
    seed: int = 0,
    fifteenth_word: str = "rested",
    min_words: int = 4,
    max_words: int = 9,
) -> list[list[str]]:
    """Experiment 3 (RECONSTRUCTED grammar; the paper prints neither grammar nor 15th word):

        S    -> [TIME] NP V [ADV] [PP]       resampled until min_words <= len(S) <= max_words
        TIME -> many years ago               p = 0.25
        NP   -> one of NOUN_PHRASES          uniform
        V    -> lived | played | <15th word> uniform
        ADV  -> happily                      p = 0.6
        PP   -> by the sea                   p = 0.45
    """
    if not fifteenth_word.isalpha() or not fifteenth_word.islower() or fifteenth_word in ATTESTED_WORDS:
        raise UsageError(f"fifteenth_word must be a new lower-case word, got {fifteenth_word!r}")
    rng = random.Random(seed)
    verbs = ("lived", "played", fifteenth_word)
    sentences = []
    while len(sentences) < num_sentences:
        parts = []
        if rng.random() < 0.25:
            parts.append("many years ago")
        parts += [rng.choice(NOUN_PHRASES), rng.choice(verbs)]
        if rng.random() < 0.6:
            parts.append("happily")
        if rng.random() < 0.45:
            parts.append("by the sea")
        words = " ".join(parts).split()
        if min_words <= len(words) <= max_words:
            sentences.append(words)
    return sentences


def letter_codes(letters: str, scheme: str = "alphabet", seed: int = 0) -> dict[str, tuple[int, ...]]:
    """5-bit letter codes: ``"alphabet"`` = binary of the position in the alphabet (matches Table 2),
    ``"random"`` = distinct random non-zero codes (what the text says)."""
    letters = "".join(sorted(set(letters)))
    if scheme == "alphabet":
        values = [ord(letter) - ord("a") + 1 for letter in letters]
    elif scheme == "random":
        values = random.Random(seed).sample(range(1, 32), len(letters))
    else:
        raise UsageError(f"unknown letter code scheme {scheme!r}; choose 'alphabet' or 'random'")
    bits = range(4, -1, -1)
    return {letter: tuple((value >> bit) & 1 for bit in bits) for letter, value in zip(letters, values, strict=True)}


# --- experiment 4 ------------------------------------------------------------------------------------

TEMPLATES = (  # Table 4, all 16 rows
    ("NOUN-HUM", "VERB-EAT", "NOUN-FOOD"),
    ("NOUN-HUM", "VERB-PERCEPT", "NOUN-INANIM"),
    ("NOUN-HUM", "VERB-DESTROY", "NOUN-FRAG"),
    ("NOUN-HUM", "VERB-INTRAN"),
    ("NOUN-HUM", "VERB-TRAN", "NOUN-HUM"),
    ("NOUN-HUM", "VERB-AGPAT", "NOUN-INANIM"),
    ("NOUN-HUM", "VERB-AGPAT"),
    ("NOUN-ANIM", "VERB-EAT", "NOUN-FOOD"),
    ("NOUN-ANIM", "VERB-TRAN", "NOUN-ANIM"),
    ("NOUN-ANIM", "VERB-AGPAT", "NOUN-INANIM"),
    ("NOUN-ANIM", "VERB-AGPAT"),
    ("NOUN-INANIM", "VERB-AGPAT"),
    ("NOUN-AGRESS", "VERB-DESTROY", "NOUN-FRAG"),
    ("NOUN-AGRESS", "VERB-EAT", "NOUN-HUM"),
    ("NOUN-AGRESS", "VERB-EAT", "NOUN-ANIM"),
    ("NOUN-AGRESS", "VERB-EAT", "NOUN-FOOD"),
)

_BASE_CATEGORIES = {
    "NOUN-HUM": ("man", "woman", "boy", "girl"),
    "NOUN-ANIM": ("cat", "mouse", "dog"),
    "NOUN-INANIM": ("book", "rock", "car"),
    "NOUN-AGRESS": ("dragon", "monster", "lion"),
    "NOUN-FRAG": ("glass", "plate"),
    "NOUN-FOOD": ("cookie", "bread", "sandwich"),
    "VERB-INTRAN": ("think", "sleep", "exist"),
    "VERB-TRAN": ("see", "chase", "like"),
    "VERB-AGPAT": ("move", "break"),
    "VERB-PERCEPT": ("smell", "see"),
    "VERB-DESTROY": ("break", "smash"),
    "VERB-EAT": ("eat",),
}
PRESETS = {
    # recommended: aggressors are animals; every verb that takes an object is transitive
    "elman1990": {
        **_BASE_CATEGORIES,
        "NOUN-ANIM": ("cat", "mouse", "dog", "dragon", "monster", "lion"),
        "VERB-TRAN": ("see", "chase", "like", "smell", "move", "break", "smash", "eat"),
    },
    "table3_literal": dict(_BASE_CATEGORIES),
    "ccm2023": {
        **_BASE_CATEGORIES,
        "NOUN-ANIM": ("cat", "mouse", "dog", "man", "woman", "boy", "girl", "dragon", "monster", "lion"),
        "NOUN-INANIM": ("book", "rock", "car", "glass", "plate", "cookie", "bread", "sandwich"),
    },
}
NOUNS = tuple(sorted({w for c, ws in _BASE_CATEGORIES.items() if c.startswith("NOUN") for w in ws}))
VERBS = tuple(sorted({w for c, ws in _BASE_CATEGORIES.items() if c.startswith("VERB") for w in ws}))
WORDS = tuple(sorted(NOUNS + VERBS))  # the 29 words
NOVEL_WORD = "zog"
# 31 localist input units: the 29 words, then the two reserved units (the first one is zog's)
VOCABULARY = (*WORDS, NOVEL_WORD, "<reserved>")


def sentence_corpus(
    num_sentences: int = 10_000,
    seed: int = 0,
    preset: str = "elman1990",
    substitute: dict[str, str] | None = None,
) -> list[list[str]]:
    """Experiment 4: uniform random templates of Table 4, each slot filled with a uniform random word
    of its category. ``substitute`` replaces words in every category (``{"man": "zog"}`` builds the
    corpus of the novel-word test)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    substitute = substitute or {}
    categories = {name: tuple(substitute.get(w, w) for w in words) for name, words in PRESETS[preset].items()}
    rng = random.Random(seed)
    return [[rng.choice(categories[slot]) for slot in rng.choice(TEMPLATES)] for _ in range(num_sentences)]


def category_of(word: str) -> str:
    """The noun class (HUM, ANIM, INANIM, AGRESS, FRAG, FOOD) or "VERB" of one of the 29 words."""
    for name, words in _BASE_CATEGORIES.items():
        if word in words and name.startswith("NOUN"):
            return name.removeprefix("NOUN-")
    if word in VERBS:
        return "VERB"
    raise UsageError(f"{word!r} is not one of the 29 words")
