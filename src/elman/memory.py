"""``keep_freed_memory``: let the C library reuse freed memory instead of handing it back to the system.

A training step allocates and frees the same large buffers every time: the states, their gradients and
their bfloat16 copies, 10 MB each for a batch of 64 streams x 64 steps x 640 units. glibc's malloc serves
a request above its mmap threshold (128 KiB at first, raised only as such blocks are freed) with a fresh
mapping, and returns memory at the top of its heap to the system beyond its trim threshold. Either way the
next step's buffers are faulted in and zeroed again, page by page: on tiny-shakespeare at 3 x 640 that was
a fifth of each training step (140 ms against 112-120 ms with the thresholds raised as here). The cost is
memory the process keeps after a peak, which a training process would soon ask for again.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit systems: larger blocks still get mappings
TRIM_THRESHOLD = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; True when they were set. Elsewhere (other C
    libraries, other systems) nothing changes and the answer is False."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
