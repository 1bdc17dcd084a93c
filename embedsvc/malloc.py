"""glibc allocator tuning for CPU inference.

glibc's malloc returns large blocks to the OS (munmap / trim) as soon as they are freed, so eager
CPU inference pays page faults for every activation buffer of every batch; on these machines that
made effnet-lite0 about 3x slower. Keeping freed memory in the heap (M_MMAP_MAX=0, a large
M_TRIM_THRESHOLD) removes that cost. ``bench/embed_cpu.py`` measures it. Kept free of heavy
imports so the CLI can call it before torch allocates anything.

Those settings keep memory in the main heap only: a thread other than the main one allocates from
an arena of its own, which still gives memory back and faults it in again. A server's batcher
and the Ray actors compute in such threads, and minilm-l6 ran about 5% slower in one than in the
main thread of the same process (1 arena: the same speed); served to 16 text clients, the ratio
to in-process went from 0.77 to 0.80 (``bench/text_throughput.py``). So every thread allocates
from the main heap (M_ARENA_MAX=1): the threads that allocate much (the model's) are few.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
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
        ok = libc.mallopt(_M_ARENA_MAX, 1) == 1 and ok
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _tuned = ok
    return ok
