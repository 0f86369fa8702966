"""Intra-op threads: how many a training run takes, and ``torch_threads`` for a block that wants another count.

A run takes the cores that are free when it starts. OpenMP's threads wait for each other at the end of every
parallel operation, spinning; with two threads on two cores that another process also keeps busy, each
operation waits for the descheduled thread, and a run fell to 0.30 of its quiet speed (tiny-shakespeare, 40 s,
two busy loops; one thread: 0.48, the fair share being 0.5). So the count is chosen once, from the cores idle
over a moment at the start, shared among the node's processes under torchrun, and never switched per step.

Small operations (a 64 x 64 GEMM, a few thousand elements) run faster on one thread than split between two:
the split costs more in synchronisation than it saves. The layer's step loops and the training step of a
small model use ``torch_threads`` for that.
"""

from __future__ import annotations

import os
import time

import torch


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _busy_and_total() -> tuple[int, int] | None:
    """Jiffies the whole machine spent busy, and in all, since boot (Linux's /proc/stat); None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and waiting for I/O
    return sum(fields) - idle, sum(fields)


def free_cores(window: float = 0.25) -> int:
    """How many of this process's cores were idle over ``window`` seconds, shared among the processes that
    torchrun started on this node (``LOCAL_WORLD_SIZE``); at least 1. Where the machine's load cannot be read,
    all of them."""
    cores = usable_cores()
    before = _busy_and_total()
    if before is not None:
        time.sleep(window)
        after = _busy_and_total()
        busy, total = after[0] - before[0], after[1] - before[1]
        if total > 0:
            machine = os.cpu_count() or cores
            cores = min(cores, round(machine * (1 - busy / total)))
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def set_training_threads(requested: int | None) -> str:
    """Set torch's intra-op threads for a run, once: ``requested``, or the cores free now. Returns a line for
    the run's log that says which and why."""
    if requested:
        torch.set_num_threads(requested)
        return f"threads: {requested} (--threads)"
    threads = free_cores()
    torch.set_num_threads(threads)
    return f"threads: {threads} (the cores free at the start, of {usable_cores()}; --threads sets it)"


class torch_threads:  # noqa: N801 - a context manager, named as the function it stands for
    """``with torch_threads(count):`` runs the block on ``count`` threads (None: as set), then restores them."""

    def __init__(self, count: int | None):
        self.count = count

    def __enter__(self) -> None:
        self.previous = torch.get_num_threads()
        if self.count is not None and self.count != self.previous:
            torch.set_num_threads(self.count)

    def __exit__(self, *exception) -> None:
        if self.count is not None and self.count != self.previous:
            torch.set_num_threads(self.previous)
