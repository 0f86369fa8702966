"""Batches of similar length, drawn from tensors built once: no per-item Python work per epoch."""

from __future__ import annotations

import torch


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Index batches in which lengths are similar, so that little padding is computed.

    With a generator: rows are shuffled, sorted by length within windows of 50 batches, cut into batches,
    and the batch order shuffled, so every epoch sees new batches. Without: sorted by length, fixed order
    (for evaluation). Within a batch, rows run longest first, the order ``ElmanRNN`` computes in, so it
    has nothing to permute.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    count = lengths.shape[0]
    if generator is None:
        order = torch.argsort(lengths, descending=True, stable=True)
        return list(order.split(batch_size))
    order = torch.randperm(count, generator=generator)
    window = batch_size * 50
    pieces = []
    for start in range(0, count, window):
        piece = order[start : start + window]
        pieces.append(piece[torch.argsort(lengths[piece], descending=True, stable=True)])
    batches = list(torch.cat(pieces).split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def trim(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Drop the padding columns that no sequence of this batch uses."""
    return ids[:, : int(lengths.max())]
