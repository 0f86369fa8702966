"""Dropout as ``torch.nn.functional.dropout`` computes it, with a mask that is cheaper to draw.

For an input ``x`` of any shape, in training,

    y = x * keep / (1 - p)        keep: same shape as x, each element 1 with probability 1 - p, else 0

and ``y = x`` otherwise. torch's CPU dropout draws ``keep`` with ``bernoulli_``, which costs ~8 ns per
element on our 2-core machine: a tenth of the default classifier's training step and a quarter of a
768-wide language model's with dropout 0.2 went into it. Here each element gets 16 random bits instead, and
is kept when they, read as a number in [0, 65536), reach ``round(p * 65536)``. So ``p`` acts rounded to a
multiple of 1/65536, and the scale uses that rounded value, which keeps E[y] = x exactly.

The bits: on the CPU, where the compiled module (``_loops.cpp``) is built, each pair of elements takes the
two halves of a 32-bit hash of its index and a seed. A float32 input is then dropped in one vectorised
pass that keeps no mask: the backward pass draws it again from the seed (the operator
``elman::hashed_dropout``, ``ops.py``). Against a
mask written, multiplied and kept for the backward pass, that is 10 MB less memory per (64, 64, 640)
activation and 1-2 ms less of a 3 x 640 language model's ~90 ms step. For other dtypes the mask is
written (0.5 ms for 64 x 64 x 640) and multiplied.
Elsewhere torch draws 64-bit words (``random_``), four elements to a word, which are then compared,
converted and scaled: 3.5 ms for the same mask. Either way the randomness starts from torch's global
generator, so ``torch.manual_seed`` makes the masks repeatable (the two ways draw different masks).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from elman.layer import fused, ops

LEVELS = 1 << 16  # values of the 16 bits each element draws
_WORD = torch.iinfo(torch.int64)


def check_rate(p: float) -> None:
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the others by ``1 / (1 - p)`` in training;
    ``x`` itself otherwise. Same shape and dtype as ``x``; differentiable in ``x``."""
    check_rate(p)
    dropped_levels = round(p * LEVELS)
    if not training or dropped_levels == 0:
        return x
    if dropped_levels == LEVELS:
        return x * 0
    hashed = fused.compiled_loops is not None and x.device.type == "cpu"
    if hashed and x.dtype == torch.float32:
        return ops.hashed_dropout(x, dropped_levels, LEVELS / (LEVELS - dropped_levels), _draw_seed())
    return x * scaled_keep_mask(x, dropped_levels, hashed)


def _draw_seed() -> Tensor:
    """A seed for the hash, drawn from torch's global generator; a tensor, so that tracing records the draw."""
    return torch.randint(_WORD.min, _WORD.max, (), dtype=torch.int64)


def scaled_keep_mask(x: Tensor, dropped_levels: int, hashed: bool) -> Tensor:
    """``keep / (1 - p)``: shape and dtype of ``x``, each element ``LEVELS / (LEVELS - dropped_levels)`` or 0;
    ``hashed``: the compiled hash's bits, else torch's."""
    scale = LEVELS / (LEVELS - dropped_levels)
    if hashed:  # scaled in x's own precision, so that E[y] = x stays exact
        mask = ops.hashed_dropout(torch.ones(x.shape, dtype=torch.float32), dropped_levels, 1.0, _draw_seed())
        return mask.to(x.dtype).mul_(scale)
    count = x.numel()
    # random_(min, max) covers every bit of a word (plain random_() leaves the sign bit 0)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_(_WORD.min, _WORD.max)
    bits = words.view(torch.int16)[:count].view(x.shape)  # signed: [-32768, 32768) stands for [0, 65536)
    keep = bits >= dropped_levels - LEVELS // 2
    return keep.to(x.dtype).mul_(scale)


class Dropout(nn.Module):
    """``torch.nn.Dropout`` on ``dropout`` above: active in training mode, the identity in evaluation mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        check_rate(p)  # when the model is built, not at its first training step
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
