"""The learning-rate schedule both trainers use: linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

WARMUP_START = 0.01  # fraction of the peak rate at the very first step


def warmup_cosine(progress: float, peak: float, warmup_fraction: float) -> float:
    """The learning rate at ``progress`` (0 at the start of the run, 1 at its end; clamped): linear warm-up
    from ``WARMUP_START * peak`` to ``peak`` over the first ``warmup_fraction`` of the run, then half a
    cosine down to 0 at the end.

    Progress can count steps or, under a time budget, seconds: a run stopped by its budget then still
    ends with the rate at 0 instead of being cut off mid-schedule.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_fraction:
        return peak * max(progress / warmup_fraction, WARMUP_START)
    decayed = (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    return peak * 0.5 * (1 + math.cos(math.pi * decayed))


def run_progress(step: int, total_steps: int, elapsed: float, time_budget: float | None) -> float:
    """How far a run is, 0 to 1: by steps, or by seconds under a time budget when those are further along (a
    budget already spent, 0 seconds, is all the way)."""
    progress = step / total_steps
    if time_budget is None:
        return progress
    return max(progress, elapsed / time_budget) if time_budget > 0 else 1.0
