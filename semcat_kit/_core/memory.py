"""Give the memory a long streaming loop has freed back to the operating system.

glibc's ``malloc`` keeps freed blocks of the sizes a training step or a scoring block allocates
(1-30 MB: above its initial mmap threshold, which it then raises to that size) in its heaps, and
with several threads (torch's intra-op pool) in several arenas; the resident private memory of a
process that allocates and frees such blocks thousands of times then creeps up with the number of
steps, not with what it holds (measured by ``bench/bench_scale.py``: a full epoch at 1M products
reached 4.5 GB where 100 steps stayed at 1.4 GB). ``malloc_trim(0)`` returns those free pages
(every arena, not only the heap top); it costs well under a millisecond here, so the loops of
:mod:`semcat_kit.learn.trainer` and :mod:`semcat_kit.judge.streaming` call it every few steps. Elsewhere
(macOS, musl, Windows) it is a no-op.

Trimming every few steps still lets a process grow between two trims, by an amount that varies
from run to run with how the heaps fragment (peaks of 1.0-1.1 GB for the same 100k training
stage). :func:`bound_heap` removes the cause: it fixes glibc's mmap threshold at 1 MiB
(``mallopt(M_MMAP_THRESHOLD)``), so every block of 1 MiB or more is its own mapping, returned to
the system when freed, and the heaps hold only small blocks. What that costs (a mapping and
fresh zeroed pages for every large block) and saves (the private memory left after the steps) is
measured side by side in one process by ``bench/bench_heap.py``. The training loop, the streaming evaluator, chunked prediction and ``encode_catalog`` call it once per
process; it is process-wide and stays set. A threshold the user chose (``MALLOC_MMAP_THRESHOLD_``
or ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...``) is left alone, and
``SEMCAT_BOUND_HEAP=0`` turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["release_freed_memory", "bound_heap", "TRIM_EVERY", "MMAP_THRESHOLD"]

#: Blocks at least this large are mapped on their own by glibc once :func:`bound_heap` ran.
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3         # glibc's mallopt parameter number
_bounded = None

#: Training steps between two calls in the trainer's loop.
TRIM_EVERY = 16

_trim = None


def release_freed_memory() -> bool:
    """``malloc_trim(0)`` on glibc (True), nothing elsewhere (False)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)
        return True
    return False


def _libc():
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _trim.malloc_trim.argtypes, _trim.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                _trim.mallopt.argtypes, _trim.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            except (OSError, AttributeError):
                _trim = False
    return _trim


def bound_heap() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` (once per process; True when set).

    Not on other C libraries, not when the user set a threshold (``MALLOC_MMAP_THRESHOLD_``,
    ``GLIBC_TUNABLES`` naming ``mmap_threshold``) and not with ``SEMCAT_BOUND_HEAP=0``.
    """
    global _bounded
    if _bounded is None:
        _bounded = False
        user = "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")
        if os.environ.get("SEMCAT_BOUND_HEAP", "1") != "0" and not user:
            libc = _libc()
            _bounded = bool(libc) and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return _bounded
