"""Training precision: float32, or bfloat16 GEMMs with float32 states and weights (mixed precision).

``"auto"`` picks mixed precision where the CPU computes bfloat16 natively (AMX or AVX512-BF16: several
times the float32 GEMM speed); elsewhere bfloat16 would be emulated and slower, so float32 is kept. On a
GPU the model trains in float32: the recurrence runs in cuDNN's whole-sequence kernels (``"auto"`` means
float32 there, and ``"bf16"`` is refused).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from elman.errors import UsageError

PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def cpu_has_fast_bfloat16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: no cheap way to tell, so stay exact
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve(precision: str, device: torch.device | str = "cpu") -> str:
    """"auto" -> "bf16" or "fp32" for this machine's ``device``; the others are returned as they are."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    on_cpu = torch.device(device).type == "cpu"
    if precision == "bf16" and not on_cpu:
        raise UsageError("precision bf16 is mixed precision for the CPU; on a GPU the model trains in float32 "
                         "(cuDNN's kernels): leave the precision at auto or fp32")
    if precision == "auto":
        return "bf16" if on_cpu and cpu_has_fast_bfloat16() else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """The context the forward pass runs in: bfloat16 autocast on ``device``'s type for "bf16", nothing for
    "fp32"."""
    if resolve(precision, device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()  # a disabled autocast still costs ~15 us to enter, every step
