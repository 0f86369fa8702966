"""Character vocabularies and the vectorizer that turns texts into padded index tensors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from elman.errors import UsageError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


@dataclass(frozen=True)
class Vocabulary:
    """Index 0 is padding, 1 unknown, 2 begin-of-sequence, 3 end-of-sequence, then the characters."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise UsageError(f"a vocabulary starts with {SPECIALS}, got {self.tokens[:4]}")
        if len(set(self.tokens)) != len(self.tokens):
            raise UsageError("a vocabulary lists each token once")
        object.__setattr__(self, "_index", {token: i for i, token in enumerate(self.tokens)})

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Every character seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(char for text in texts for char in text)
        chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(SPECIALS + tuple(chars))

    @classmethod
    def from_json(cls, payload: dict) -> Vocabulary:
        tokens = payload.get("tokens") if isinstance(payload, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise UsageError("vocabulary JSON must be an object with a list of strings under 'tokens'")
        return cls(tuple(tokens))

    def to_json(self) -> dict:
        return {"tokens": list(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, token: str) -> int:
        return self._index.get(token, 1)

    def unknown_characters(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self._index})

    def indices(self, text: str) -> list[int]:
        """The index of each character (1, unknown, for characters not in the vocabulary)."""
        return [self._index.get(c, 1) for c in text]

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """<bos> + characters + <eos>; characters beyond ``max_length - 2`` are cut."""
        chars = text if max_length is None else text[: max(max_length - 2, 0)]
        return [2, *self.indices(chars), 3]

    def decode(self, ids: Iterable[int]) -> str:
        """Inverse of ``encode`` for known characters: specials are dropped."""
        return "".join(self.tokens[i] for i in ids if i >= len(SPECIALS))


def vectorize(texts: list[str], vocabulary: Vocabulary, max_length: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> (ids (N, T) int64 padded with 0, lengths (N,) int64), T the longest encoded text; each text cut
    to ``max_length`` tokens (training's bound), or read whole with None (inference)."""
    encoded = [vocabulary.encode(text, max_length) for text in texts]
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.int64)
    ids = torch.zeros(len(encoded), int(lengths.max()) if encoded else 0, dtype=torch.int64)
    for row, sequence in enumerate(encoded):
        ids[row, : len(sequence)] = torch.tensor(sequence)
    return ids, lengths
