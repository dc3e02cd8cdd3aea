"""Many processes on PyTorch's own launcher: ``torchrun --nproc-per-node=N -m semcat_kit ...``.

One code path for one process or many: :func:`init_from_env` starts a process group only when
``torchrun`` set ``WORLD_SIZE > 1`` (NCCL when every rank has a GPU, gloo on CPUs), and the rest
of the library asks :func:`rank` / :func:`world_size` (1 process: rank 0 of 1). Several machines:
``torchrun --nnodes=M --node-rank=i --master-addr=HOST --master-port=PORT --nproc-per-node=N``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_distributed", "rank", "world_size", "local_rank", "is_main", "barrier",
           "device_for_rank", "shutdown", "main_first", "all_gather_object", "all_gather_rows"]


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or the only process): the one that prints, writes results and exports."""
    return rank() == 0


#: Seconds a collective (a barrier) waits for the other ranks; ``SEMCAT_DIST_TIMEOUT`` overrides it.
DEFAULT_TIMEOUT_S = 1800.0


def timeout_seconds() -> float:
    """The collective timeout: ``SEMCAT_DIST_TIMEOUT`` (seconds) or :data:`DEFAULT_TIMEOUT_S`.

    Ranks wait for each other at barriers, e.g. while each encodes its share of the catalog in
    ``semcat train`` / ``semcat encode``: raise this when one share takes longer than 30 minutes.
    """
    raw = os.environ.get("SEMCAT_DIST_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        t = float(raw)
    except ValueError:
        t = float("nan")
    if not t > 0:
        raise ValueError(f"SEMCAT_DIST_TIMEOUT={raw!r} is not a positive number of seconds")
    return t


def init_from_env(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Start the process group from torchrun's environment when ``WORLD_SIZE > 1``.

    Returns whether a group is running. ``backend`` default: ``"nccl"`` when CUDA is available,
    else ``"gloo"``. ``timeout_s`` default: :func:`timeout_seconds`. A no-op (False) for a single
    process; idempotent.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    if timeout_s is None:
        timeout_s = timeout_seconds()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout_s))
    return True


def device_for_rank(device: str) -> str:
    """``"auto"``/``"cuda"`` become this rank's GPU (``cuda:LOCAL_RANK``) under torchrun."""
    if is_distributed() and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` (picklable and small: counts, stats, a few failures), in rank order.

    ``[obj]`` for one process. Large arrays go through :func:`all_gather_rows` (tensors, not pickles).
    """
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def _collective_device() -> torch.device:
    """Where a collective's tensors must live: this rank's GPU with NCCL, the CPU with gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(arr: np.ndarray, interleave: bool = False, block_rows: int = 1 << 20):
    """Every rank's rows of a numeric or bool array, in rank order (``[arr]`` for one process).

    The ranks' arrays share dtype and trailing shape; their lengths may differ (a rank may have
    none). Gathered as tensors with ``torch.distributed.all_gather`` (CPU with gloo, this rank's GPU
    with NCCL), ``block_rows`` rows at a time: the transient buffers are bounded by a block times
    the number of ranks.

    Parameters
    ----------
    arr : numpy.ndarray, (n_r, ...)
        This rank's rows.
    interleave : bool
        Return one array in which rank ``r``'s row ``i`` is row ``r + world * i`` (shares taken as
        ``rows[r::world]`` put back in order), written block by block (no per-rank copies held
        besides it). Raises ``ValueError`` when the lengths are not those of such shares.
    block_rows : int
        Rows per collective.

    Returns
    -------
    list of numpy.ndarray, or numpy.ndarray with ``interleave``
    """
    arr = np.ascontiguousarray(arr)
    is_bool = arr.dtype == bool
    if not is_distributed():
        return arr if interleave else [arr]
    world, dev = world_size(), _collective_device()
    a = arr.view(np.uint8) if is_bool else arr          # bool as bytes (every backend gathers uint8)
    n = torch.tensor([a.shape[0]], dtype=torch.int64, device=dev)
    ns = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(ns, n)
    lens = [int(x.item()) for x in ns]
    total = sum(lens)
    if interleave:
        want = [len(range(r, total, world)) for r in range(world)]
        if lens != want:
            raise ValueError(f"all_gather_rows(interleave=True): the ranks hold {lens} rows, not shares "
                             f"rows[r::{world}] of {total} rows ({want}); do the ranks hold the same table?")
        out = np.empty((total,) + a.shape[1:], dtype=a.dtype)
    else:
        outs = [np.empty((k,) + a.shape[1:], dtype=a.dtype) for k in lens]
    m = max(lens)
    for lo in range(0, m, block_rows):                 # the same number of blocks on every rank
        hi = min(m, lo + block_rows)
        mine = np.zeros((hi - lo,) + a.shape[1:], dtype=a.dtype)
        part = a[lo:hi]
        mine[:len(part)] = part
        t = torch.from_numpy(mine).to(dev)
        bufs = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(bufs, t)
        for r in range(world):
            k = min(hi, lens[r]) - lo
            if k <= 0:
                continue
            rows = bufs[r][:k].cpu().numpy()
            if interleave:
                out[r + world * lo:r + world * (lo + k):world] = rows
            else:
                outs[r][lo:lo + k] = rows
        del t, bufs
    if interleave:
        return out.view(bool) if is_bool else out
    return [o.view(bool) for o in outs] if is_bool else outs


@contextlib.contextmanager
def main_first():
    """Run the block on rank 0 first, then on the others (e.g. fill a cache once, then read it)."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
