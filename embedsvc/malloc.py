"""glibc allocator tuning for CPU inference.

glibc's malloc returns large blocks to the OS (munmap / trim) as soon as they are freed, so eager
CPU inference pays page faults for every activation buffer of every batch; on these machines that
made effnet-lite0 about 3x slower. Keeping freed memory in the heap (M_MMAP_MAX=0, a large
M_TRIM_THRESHOLD) removes that cost. ``bench/embed_cpu.py`` measures it. Kept free of heavy
imports so the CLI can call it before torch allocates anything.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30
DISABLE_ENV = "EMBEDSVC_MALLOC_TUNING"  # set to 0 to measure or debug without it

_tuned: bool | None = None


def tune_malloc() -> bool:
    """Apply the allocator setting once per process; returns whether it is in effect."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return False
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _tuned = ok
    return ok
