"""Batches drawn from tensors built once, no per-item Python work per epoch: labelled texts of similar
length for classifiers; truncated-BPTT chunks of a long text, or lines, for language models."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# the most padded tokens (rows x longest) an evaluation batch reads at once: 512 texts of up to 32 tokens (what
# training reads), 10,000-character texts one at a time: 12 of those through a classifier with a 256-unit
# generative member (18 rows a text) peak at 0.54 GB so, 1.8 GB six at a time
MAX_EVALUATION_TOKENS = 1 << 14


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
    max_tokens: int | None = None,
) -> list[torch.Tensor]:
    """Index batches in which lengths are similar, so that little padding is computed.

    With a generator: rows are shuffled, sorted by length within windows of 50 batches, cut into batches,
    and the batch order shuffled, so every epoch sees new batches. Without: sorted by length, fixed order
    (for evaluation), and with ``max_tokens`` a batch of long rows holds fewer of them: at most
    ``max_tokens`` // its longest (at least one). Within a batch, rows run longest first, the order
    ``ElmanRNN`` computes in, so it has nothing to permute.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    count = lengths.shape[0]
    if generator is None:
        order = torch.argsort(lengths, descending=True, stable=True)
        if max_tokens is None:
            return list(order.split(batch_size))
        batches, start = [], 0
        while start < count:
            size = max(1, min(batch_size, max_tokens // max(int(lengths[order[start]]), 1)))
            batches.append(order[start : start + size])
            start += size
        return batches
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


@dataclass
class TextBatch:
    """One training step of a language model: read ``inputs``, predict ``targets``.

    inputs, targets: ``(B, T)`` int64; a target of 0 (padding) is not scored.
    lengths: ``(B,)`` valid steps of padded rows, or None when every row is full.
    conditions: ``(B,)`` label indices for a conditioned model, or None.
    continues: the rows continue those of the previous batch, so its final state is carried over.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor | None = None
    conditions: torch.Tensor | None = None
    continues: bool = False

    def to(self, device: torch.device) -> TextBatch:
        """The batch on ``device``; ``lengths`` stay on the CPU, where the recurrence reads them (as
        ``pack_padded_sequence`` does)."""
        return TextBatch(self.inputs.to(device), self.targets.to(device), self.lengths,
                         None if self.conditions is None else self.conditions.to(device), self.continues)


def stream_batches(ids: torch.Tensor, batch_size: int, chunk_length: int, offset: int = 0) -> list[TextBatch]:
    """Truncated-BPTT chunks of one long text ``ids`` (N,): the text is cut into ``batch_size`` equal
    contiguous streams (row b of every batch continues row b of the one before), and time into chunks of
    ``chunk_length`` steps (the last may be shorter). The batches are views: nothing is copied.

    ``offset``: characters skipped at the start. Training skips a random number below ``chunk_length``
    each epoch, so that the chunk boundaries, where the gradient is cut, fall on other characters."""
    if batch_size < 1 or chunk_length < 1:
        raise ValueError(f"batch_size and chunk_length must be positive, got {batch_size} and {chunk_length}")
    if ids.shape[0] < 2:
        raise ValueError(f"a text of {ids.shape[0]} characters has nothing to predict; give at least two")
    if not 0 <= offset <= ids.shape[0] - 2:
        raise ValueError(f"offset must leave two characters of the {ids.shape[0]}, got {offset}")
    ids = ids[offset:]
    streams = min(batch_size, ids.shape[0] - 1)
    columns = (ids.shape[0] - 1) // streams
    inputs = ids[: streams * columns].view(streams, columns)
    targets = ids[1 : streams * columns + 1].view(streams, columns)
    return [TextBatch(inputs[:, start : start + chunk_length], targets[:, start : start + chunk_length],
                      continues=start > 0)
            for start in range(0, columns, chunk_length)]


def line_batches(ids: torch.Tensor, lengths: torch.Tensor, conditions: torch.Tensor | None, batch_size: int,
                 generator: torch.Generator | None = None) -> list[TextBatch]:
    """Batches of separate lines, each encoded ``<bos> chars <eos>`` in a row of ``ids`` (N, T) with
    ``lengths`` (N,): read all but the last token, predict all but the first. Shuffled and length-bucketed
    with a generator, fixed order without (see ``length_bucketed_batches``)."""
    batches = []
    for rows in length_bucketed_batches(lengths, batch_size, generator):
        steps = lengths[rows] - 1
        width = int(steps.max())
        batches.append(TextBatch(ids[rows, :width], ids[rows, 1 : width + 1], steps,
                                 None if conditions is None else conditions[rows]))
    return batches
