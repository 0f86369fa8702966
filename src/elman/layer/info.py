"""What the layer runs on here: ``elman info`` prints it (``--json`` for scripts)."""

from __future__ import annotations

import os
import platform

import torch

from elman.layer import fused, ops


def runtime_info() -> dict:
    """The torch build, the compiled loops, the CPU's bfloat16 support, threads, and CUDA/cuDNN."""
    loops = fused.compiled_loops
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "operators": [name for name in ops.OPERATORS if hasattr(torch.ops.elman, name)],
        "compiled_loops": None if loops is None else loops.__file__,
        # whether the float32 loops' per-step products are our AVX-512 kernel (else BLAS sgemm)
        "panel_kernels": loops is not None and hasattr(loops, "has_panels") and loops.has_panels(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bfloat16_gemm": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
        "amx": torch.cpu._is_amx_tile_supported(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda if cuda else None,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cudnn": torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None,
    }


def describe(info: dict) -> str:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    loops = info["compiled_loops"] or "not loaded: the Python loops run (see elman/layer/build.py)"
    bf16 = f"{yes(info['bfloat16_gemm'])} (AVX512-BF16 {yes(info['avx512_bf16'])}, AMX {yes(info['amx'])})"
    cuda = "no"
    if info["cuda"] is not None:
        cuda = f"{info['cuda']} on {', '.join(info['cuda_devices'])}, cuDNN {info['cudnn']}"
    rows = [("python", info["python"]), ("torch", info["torch"]),
            ("operators", ", ".join(f"elman::{name}" for name in info["operators"])),
            ("compiled loops", loops),
            ("step products", "AVX-512 panels" if info["panel_kernels"] else "BLAS (MKL sgemm)"),
            ("cpu", info["cpu_capability"]), ("bfloat16 GEMMs", bf16),
            ("threads", f"{info['threads']} intra-op, {info['interop_threads']} inter-op, {info['cpu_count']} cpus"),
            ("cuda", cuda)]
    return "\n".join(f"{name + ':':<16}{value}" for name, value in rows)
