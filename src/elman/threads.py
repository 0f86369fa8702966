"""``torch_threads``: run a block on a given number of intra-op threads, then restore the setting.

Small operations (a 64 x 64 GEMM, a few thousand elements) run faster on one thread than split between
two: the split costs more in synchronisation than it saves. The layer's step loops and the training step
of a small model use this.
"""

from __future__ import annotations

import torch


class torch_threads:  # noqa: N801 - a context manager, named as the function it stands for
    """``with torch_threads(count):`` runs the block on ``count`` threads (None: as set)."""

    def __init__(self, count: int | None):
        self.count = count

    def __enter__(self) -> None:
        self.previous = torch.get_num_threads()
        if self.count is not None and self.count != self.previous:
            torch.set_num_threads(self.count)

    def __exit__(self, *exception) -> None:
        if self.count is not None and self.count != self.previous:
            torch.set_num_threads(self.previous)
