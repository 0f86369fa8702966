"""One process, or several under torchrun, and the device a run trains on.

Several processes: ``torchrun --nproc_per_node=N -m elman train ...`` starts N copies; each joins the
process group (gloo: the models train on the CPU), wraps its model in ``DistributedDataParallel`` and
takes every N-th row of each global batch. The loss of a step is summed over a process's rows and divided
by the number of scored items in the whole global batch (times N, since DDP averages the gradients), so the
update equals the one a single process makes on the whole batch. Every process validates (the weights are
the same everywhere, so every process takes the same decisions); only the first writes files and progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor
from torch import distributed as dist

from elman.errors import UsageError


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0

    def total(self, value: Tensor) -> Tensor:
        """``value`` summed over all processes."""
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def agreed(self, seconds: float) -> float:
        """The mean of a clock reading over the processes: what is decided on the clock (the end of a time
        budget, a learning rate following it) must be decided alike everywhere."""
        return float(self.total(torch.tensor([seconds], dtype=torch.float64))) / self.world if self.world > 1 \
            else seconds

    def rows(self, tensor: Tensor | None) -> Tensor | None:
        """This process's share of a global batch: every ``world``-th row, starting at ``rank``."""
        return tensor if tensor is None or self.world == 1 else tensor[self.rank :: self.world]

    def gather_rows(self, tensor: Tensor, dim: int) -> Tensor:
        """Inverse of ``rows`` along ``dim``: every process's share, interleaved back into the global batch."""
        if self.world == 1:
            return tensor
        shares = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(shares, tensor.contiguous())
        return torch.stack(shares, dim=dim + 1).flatten(dim, dim + 1)


def join_processes() -> Processes:
    """Under torchrun (``WORLD_SIZE`` > 1) join the process group; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Processes(dist.get_rank(), dist.get_world_size())


def training_device(name: str, processes: Processes) -> torch.device:
    """The device a run trains on: "cpu", or "cuda" / "cuda:N" where PyTorch sees that GPU. Several
    processes (torchrun) train on the CPU only: their process group is gloo's."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"device must be cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"device must be cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise UsageError(f"device {name!r}: PyTorch sees no CUDA GPU here (a CPU build of torch, or no driver); "
                         "train with device cpu")
    if (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if processes.world > 1:
        raise UsageError(f"device {name!r}: several processes (torchrun) train on the CPU only; leave the device "
                         "at cpu, or train in one process on the GPU")
    return device

