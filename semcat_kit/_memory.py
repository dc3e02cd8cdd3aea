"""Give the memory a long streaming loop has freed back to the operating system.

glibc's ``malloc`` keeps freed blocks of the sizes a training step or a scoring block allocates
(1-30 MB: above its initial mmap threshold, which it then raises to that size) in its heaps, and
with several threads (torch's intra-op pool) in several arenas; the resident private memory of a
process that allocates and frees such blocks thousands of times then creeps up with the number of
steps, not with what it holds (measured by ``bench/bench_scale.py``: a full epoch at 1M products
reached 4.5 GB where 100 steps stayed at 1.4 GB). ``malloc_trim(0)`` returns those free pages
(every arena, not only the heap top); it costs well under a millisecond here, so the loops of
:mod:`semcat_kit.trainer` and :mod:`semcat_kit.streaming` call it every few steps. Elsewhere
(macOS, musl, Windows) it is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["release_freed_memory", "TRIM_EVERY"]

#: Training steps between two calls in the trainer's loop.
TRIM_EVERY = 16

_trim = None


def release_freed_memory() -> bool:
    """``malloc_trim(0)`` on glibc (True), nothing elsewhere (False)."""
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                fn = libc.malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
                _trim = fn
            except (OSError, AttributeError):
                _trim = False
    if _trim:
        _trim(0)
        return True
    return False
