"""Generators for the corpora of J. L. Elman, "Finding Structure in Time", Cognitive Science 14 (1990).

Re-implemented from the specification in the project's research notes (elman1990.md); every corpus is
a deterministic function of its seed.
"""

from __future__ import annotations

import torch


def temporal_xor(num_bits: int = 3000, seed: int = 0) -> torch.Tensor:
    """Elman's experiment 1: random bit pairs, each followed by their XOR, as one unbroken stream.

    Returns a float tensor of shape ``(num_bits,)`` holding 0.0/1.0; ``num_bits`` must be a positive
    multiple of 3 (the paper uses 3,000 bits, i.e. 1,000 triplets). Every third bit (positions 2, 5, 8,
    ... counting from 0) is the XOR of the two before it; the others are uniform random.
    """
    if num_bits <= 0 or num_bits % 3:
        raise ValueError(f"num_bits must be a positive multiple of 3, got {num_bits}")
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, 2, (num_bits // 3, 2), generator=generator)
    triplets = torch.cat([pairs, pairs[:, :1] ^ pairs[:, 1:]], dim=1)
    return triplets.reshape(-1).float()
