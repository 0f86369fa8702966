"""The learning-rate schedules: linear warm-up, then cosine decay to zero (the classifier), or a plateau at
the peak and a short decay to zero (the language model)."""

from __future__ import annotations

import math

WARMUP_START = 0.01  # fraction of the peak rate at the very first step


def warmup(progress: float, peak: float, warmup_fraction: float) -> float:
    """The rate at ``progress`` within the linear warm-up from ``WARMUP_START * peak`` to ``peak`` over the
    first ``warmup_fraction`` of the run."""
    return peak * max(progress / warmup_fraction, WARMUP_START)


def warmup_cosine(progress: float, peak: float, warmup_fraction: float) -> float:
    """The learning rate at ``progress`` (0 at the start of the run, 1 at its end; clamped): linear warm-up
    over the first ``warmup_fraction`` of the run, then half a cosine down to 0 at the end.

    Progress can count steps or, under a time budget, seconds: a run stopped by its budget then still
    ends with the rate at 0 instead of being cut off mid-schedule.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_fraction:
        return warmup(progress, peak, warmup_fraction)
    decayed = (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    return peak * 0.5 * (1 + math.cos(math.pi * decayed))


def warmup_stable_decay(progress: float, peak: float, warmup_fraction: float, decay_fraction: float) -> float:
    """The learning rate at ``progress`` (as ``warmup_cosine``'s): linear warm-up over the first
    ``warmup_fraction``, then ``peak`` until the last ``decay_fraction`` of the run, over which it falls to 0
    as ``peak * (1 - sqrt(d))``, d going from 0 to 1.

    The long plateau keeps the steps noisy while a model that overfits would otherwise settle on its
    training text; the steep start of the decay then gains most of what annealing gives.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_fraction:
        return warmup(progress, peak, warmup_fraction)
    start = 1.0 - decay_fraction
    if progress <= start:
        return peak
    return peak * (1 - math.sqrt((progress - start) / decay_fraction))  # here decay_fraction > progress - start > 0


def run_progress(step: int, total_steps: int, elapsed: float, time_budget: float | None) -> float:
    """How far a run is, 0 to 1: by steps, or by seconds under a time budget when those are further along (a
    budget already spent, 0 seconds, is all the way)."""
    progress = step / total_steps
    if time_budget is None:
        return progress
    return max(progress, elapsed / time_budget) if time_budget > 0 else 1.0
