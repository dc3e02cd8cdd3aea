"""Torch threads for runs that share the machine: one knob, ``SEMCAT_THREADS``.

Torch's CPU kernels run on an OpenMP team (GNU ``libgomp`` in the Linux wheels:
``torch.__config__.parallel_info()``). Every operator ends at a barrier where each thread waits
for the others. When other CPU-bound processes share the cores, a team of as many threads as
cores waits at every barrier for a thread the scheduler has just preempted, and libgomp's
threads spin while they wait, burning the share of the cores the run would have had (measured on
2 cores with 4 busy processes: a training run 16-31x slower than idle instead of the ~3x its share
predicts; ``bench/bench_trainer_bound.py``). So:

* :func:`choose_threads` -- ``SEMCAT_THREADS`` when set (a positive int; ``auto`` or unset: the
  cores this process may use less those other processes keep busy, measured over a short window
  from ``/proc/stat``, at least 1). The trainer (:class:`semcat_kit.learn.trainer.Trainer`) runs under
  it (:func:`torch_threads`) and restores the caller's setting after;
  ``semcat_kit.learn.solver.default_threads`` returns it.
* :func:`set_wait_policy` -- ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at a barrier instead of
  spinning) when torch is not imported yet (libgomp reads it once, when torch loads it); a value
  the user set is kept; ``SEMCAT_OMP_PASSIVE=0`` leaves it unset.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

__all__ = ["ENV", "choose_threads", "torch_threads", "set_wait_policy", "available_cores", "busy_cores",
           "describe"]

#: Environment variable: torch threads for training (a positive int, or ``auto``).
ENV = "SEMCAT_THREADS"
_cache: dict = {}
_CACHE_S = 5.0          # one measurement serves the runs started within this many seconds


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)          # idle + iowait
    return sum(v[:8]), idle


def busy_cores(window: float = 0.05) -> float:
    """CPUs kept busy by *other* processes over ``window`` seconds (``/proc/stat`` less this
    process's own CPU time); ``os.getloadavg`` where ``/proc`` is missing; 0 when neither works."""
    try:
        t0, i0 = _cpu_times()
        own0 = sum(os.times()[:2])
        time.sleep(window)
        t1, i1 = _cpu_times()
        own1 = sum(os.times()[:2])
    except (OSError, ValueError, IndexError):
        try:
            return float(os.getloadavg()[0])
        except (OSError, AttributeError):   # pragma: no cover
            return 0.0
    total = t1 - t0
    if total <= 0:
        return 0.0
    ncpu = os.cpu_count() or 1
    busy = (total - (i1 - i0)) / total * ncpu - (own1 - own0) / window
    return max(0.0, busy)


def choose_threads(default: int | None = None, cap: int | None = None) -> int:
    """Torch threads for a run: ``SEMCAT_THREADS`` if set to a positive int, else ``default`` if
    given, else the available cores less the cores other processes keep busy (rounded), at least 1
    and at most the caller's torch threads (``torch.get_num_threads()``: ``OMP_NUM_THREADS`` or
    ``torch.set_num_threads`` are a cap that ``auto`` never raises; ``cap``: that cap given, for a
    long run that chooses again while running under a count it chose before).

    Raises
    ------
    ValueError
        ``SEMCAT_THREADS`` is neither a positive int nor ``auto``.
    """
    raw = os.environ.get(ENV, "").strip().lower()
    if raw and raw != "auto":
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{ENV}={os.environ[ENV]!r}: set it to a positive number of threads, or to 'auto'")
        return n
    if default is not None:
        return max(1, int(default))
    now = time.monotonic()
    if not _cache or now - _cache["at"] >= _CACHE_S:
        cores = available_cores()
        _cache.update(at=now, n=max(1, min(cores, int(cores - busy_cores() + 0.5))))
    return min(_cache["n"], int(cap) if cap is not None else _torch_threads())


def _torch_threads() -> int:
    """The caller's torch threads (``torch.set_num_threads``, ``OMP_NUM_THREADS``): a cap, never raised."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    raw = os.environ.get("OMP_NUM_THREADS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else available_cores()


@contextlib.contextmanager
def torch_threads(n: int | None = None):
    """Run the block with ``torch.set_num_threads(n or choose_threads())``; restore after."""
    import torch

    old = torch.get_num_threads()
    n = n or choose_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def set_wait_policy() -> bool:
    """``OMP_WAIT_POLICY=PASSIVE`` unless torch is already imported, the user set it, or
    ``SEMCAT_OMP_PASSIVE=0``; True when it is set now."""
    if os.environ.get("SEMCAT_OMP_PASSIVE", "1") == "0" or "OMP_WAIT_POLICY" in os.environ:
        return False
    if "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def describe() -> str:
    """One line: the threads :func:`choose_threads` picks now, and the OpenMP wait policy."""
    return (f"{ENV}={os.environ.get(ENV, 'auto')} -> {choose_threads()} thread(s) of {available_cores()} core(s), "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
