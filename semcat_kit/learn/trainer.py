"""One training loop with callbacks over one history (the skorch shape).

:class:`Trainer` owns the loop -- shuffled batches, forward, loss, backward, optimizer and
learning-rate steps -- and nothing else. Everything that happens *around* the loop is a
:class:`Callback` reading and writing the trainer's state:

==========================  ================================================================
:class:`CurriculumTargets`  rebuilds the soft targets when the curriculum's alpha changes
:class:`DivergenceStop`     stops with :class:`TrainingDivergedError` on a NaN/inf loss, naming
                            the epoch and batch (checked every ``check_every`` steps: one host
                            sync per check, not per step)
:class:`Validation`         validation loss and metrics into the epoch's history row
:class:`EarlyStopping`      watches a validation metric, keeps and restores the best weights
:class:`Checkpoint`         atomic ``last.pt`` every n epochs (and at the end); exact resume
:class:`ProgressBar`        ``tqdm`` over epochs
:class:`MetricLogger`       appends each history row to a CSV file as it is written
==========================  ================================================================

Each callback can save state into a checkpoint (``state_dict`` / ``load_state_dict``), so a
resumed run continues bit-exactly. The same loop runs on one process or many: under
``torchrun`` (``torch.distributed`` initialised) the model is wrapped in
``DistributedDataParallel``, each rank takes its slice of every global batch, losses are
all-reduced for the history, and only rank 0 validates, checkpoints and shows progress (its
decisions are broadcast). Data comes from any table with ``__len__`` and ``batch(idx, device)``:
the in-memory :class:`semcat_kit._core.contracts.EmbeddingTable` or a memory-mapped store.

A step is the head's own work and little else (``bench/bench_trainer_bound.py`` compares it with
a bare loop of the same layers): the loss's parts stay on the device, one stacked row a step,
summed once per epoch (no host sync but the NaN check's, every ``check_every`` steps); only the
callbacks that override ``on_step_end`` are called per step; the loop runs under
:func:`semcat_kit._core.threads.torch_threads` (``SEMCAT_THREADS``: fewer threads when other
processes keep the cores busy).
"""
from __future__ import annotations

import copy
import csv
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .._core.io import atomic_path
from .._core.progress import progress
from .._core.memory import TRIM_EVERY, bound_heap, release_freed_memory
from .._core.contracts import autocast
from .._core.threads import torch_threads

__all__ = ["Trainer", "Callback", "CurriculumTargets", "DivergenceStop", "Validation", "EarlyStopping",
           "Checkpoint", "ProgressBar", "MetricLogger", "TrainingDivergedError", "CheckpointError",
           "BatchSampler", "distributed_context"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/inf; ``.epoch``, ``.batch`` and ``.checkpoint`` (last good one or None)."""

    def __init__(self, msg: str, epoch: int, batch: int, checkpoint):
        super().__init__(msg)
        self.epoch, self.batch, self.checkpoint = epoch, batch, checkpoint


class CheckpointError(OSError):
    """A checkpoint could not be written (names the folder and the cause)."""


# ------------------------------------------------------------------------------------ distributed
def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)`` of an initialised process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------ sampling
class BatchSampler:
    """Shuffled global batches of row indices, sliced per rank.

    ``chunk_size=None``: a full permutation of the N rows per epoch (in-memory tables). With a
    ``chunk_size`` (memory-mapped tables): the table is cut into blocks of ``chunk_size``
    consecutive rows, the blocks are shuffled, and each window of ``window`` blocks (taken from
    random places of the table) is permuted as a whole -- so reads are contiguous blocks and a
    window's rows fit in the page cache, while a batch still mixes rows from ``window`` places
    (a catalog sorted by class is not learned class by class). Every rank draws the same global
    order (same generator state) and takes rows ``rank::world`` of each global batch, so the
    union over ranks is exactly the one-process batch. With several ranks, a last global batch
    of fewer rows than ranks (one rank would get none: an empty step, a NaN loss on that rank
    only) is joined to the batch before it.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, *, rank: int = 0, world: int = 1,
                 chunk_size: int | None = None, window: int = 64):
        self.n, self.batch_size, self.gen = int(n), int(batch_size), generator
        self.rank, self.world, self.chunk_size, self.window = rank, world, chunk_size, max(1, int(window))
        if self.world > 1 and self.n < self.world:
            raise ValueError(f"{self.n} training row(s) for {self.world} processes: every process needs at least "
                             "one row a step; train on one process or on more rows")

    def __len__(self) -> int:
        return len(self._bounds())

    def _bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each global batch in the epoch's order."""
        bs = self.batch_size
        out = [(a, min(self.n, a + bs)) for a in range(0, self.n, bs)]
        if self.world > 1 and len(out) > 1 and out[-1][1] - out[-1][0] < self.world:
            out[-2:] = [(out[-2][0], self.n)]        # every rank gets a row of every step
        return out

    def epoch(self) -> list[torch.Tensor]:
        """This epoch's batches for this rank (draws from the generator once per epoch)."""
        c = self.chunk_size
        # int32 row numbers (the same permutation as int64; half the memory of an epoch's order)
        dt = torch.int32 if self.n < 2**31 else torch.int64
        if c is None or c * self.window >= self.n:
            perm = torch.randperm(self.n, generator=self.gen, dtype=dt)
        else:
            blocks = torch.randperm(math.ceil(self.n / c), generator=self.gen)
            parts = []
            for w in range(0, len(blocks), self.window):
                rows = torch.cat([torch.arange(b * c, min(self.n, (b + 1) * c), dtype=dt)
                                  for b in blocks[w:w + self.window].tolist()])
                parts.append(rows[torch.randperm(len(rows), generator=self.gen)])
            perm = torch.cat(parts)
        out = []
        for a, b in self._bounds():
            idx = perm[a:b]
            out.append(idx[self.rank::self.world] if self.world > 1 else idx)
        return out


# ------------------------------------------------------------------------------------ callbacks
class Callback:
    """Hooks around the loop. ``trainer.row`` is the history row of the current epoch (already in
    ``trainer.history``); set ``trainer.stop = True`` to end training after this epoch."""

    #: Callbacks run in ascending ``order`` (ties: the order given).
    order: int = 50

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def on_epoch_begin(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer") -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict:
        """State saved into checkpoints (plain Python / tensors)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""

    @property
    def key(self) -> str:
        return type(self).__name__


class CurriculumTargets(Callback):
    """Soft targets of the epoch: ``build(alpha = schedule(epoch))``, rebuilt only when alpha changes."""

    order = 0

    def __init__(self, build: Callable[[float], Any] | None, schedule: Callable[[int], float] | None):
        self.build, self.schedule = build, schedule
        self._alpha = None

    def on_epoch_begin(self, trainer):
        if self.build is None:
            trainer.row["alpha"] = 0.0
            return
        alpha = float(self.schedule(trainer.epoch)) if self.schedule is not None else 0.0
        if trainer.targets is None or alpha != self._alpha:
            trainer.targets = self.build(alpha)
            self._alpha = alpha
        trainer.row["alpha"] = alpha


class DivergenceStop(Callback):
    """Raise :class:`TrainingDivergedError` when a step's loss is NaN/inf.

    Step losses stay on the device; they are checked every ``check_every`` steps and at the end
    of each epoch (one host sync per check), and the first bad step is named exactly.
    """

    order = 5

    def __init__(self, check_every: int = 1, lr: float | None = None):
        self.check_every = max(1, int(check_every))
        self.lr = lr
        self._checked = 0

    def on_epoch_begin(self, trainer):
        self._checked = 0

    def on_step_end(self, trainer):
        if (trainer.batch + 1) % self.check_every == 0 or trainer.batch + 1 == trainer.steps_per_epoch:
            self.check(trainer)

    def check(self, trainer):
        upto = trainer.batch + 1
        losses = trainer.step_losses[self._checked:upto]
        if len(losses) and not bool(torch.isfinite(losses).all()):
            bad = self._checked + int(torch.nonzero(~torch.isfinite(losses))[0, 0])
            self.fail(trainer, bad)
        self._checked = upto

    def fail(self, trainer, b: int):
        ck = trainer.last_checkpoint
        lr = self.lr if self.lr is not None else trainer.optimizer.param_groups[0]["lr"]
        if ck:
            where = (f"The last good checkpoint is {ck} (end of epoch {trainer.checkpoint_epoch}); resume from it "
                     f"with a lower lr (now {lr:g}) or check the inputs.")
        else:
            where = ("No checkpoint was written yet" if trainer.checkpoint_dir is not None else
                     "No checkpoint_dir was given (pass one to keep checkpoints)") + \
                f"; retry with a lower lr (now {lr:g}) or check the inputs."
        parts = trainer.step_parts[b] if b < len(trainer.step_parts) else {}
        desc = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
        value = float(trainer.step_losses[b])
        trainer.close_bars()
        raise TrainingDivergedError(
            f"loss became {value} at epoch {trainer.epoch + 1}, batch {b + 1} of {trainer.steps_per_epoch} "
            f"({desc}); training stopped. {where}", trainer.epoch + 1, b + 1, ck)


class Validation(Callback):
    """Validation loss (mean NLL of the true class) and metrics into the history row, streamed.

    Scores are computed batch by batch on the device and fed to ``evaluator`` (a
    :class:`semcat_kit.judge.streaming.StreamingEvaluator` built with ``from_logits=True``, equal to
    ``semcat_kit.evaluate`` on the whole matrix), so no dense (N_val, C) array is ever built and
    there is one host sync per validation, not per batch. Data warnings are shown on the first
    validated epoch only. Only rank 0 validates.
    """

    order = 10

    def __init__(self, data, y: np.ndarray, evaluator, batch_size: int = 4096):
        self.data, self.y, self.evaluator, self.batch_size = data, np.asarray(y), evaluator, batch_size
        self._first = True

    def on_epoch_end(self, trainer):
        if trainer.rank != 0:
            return
        t1 = time.perf_counter()
        ev = self.evaluator
        ev.reset()
        yt = torch.as_tensor(self.y, dtype=torch.int64, device=trainer.device)
        nll = torch.zeros((), dtype=torch.float64, device=trainer.device)
        model = trainer.module
        was = model.training
        model.eval()
        with warnings.catch_warnings():
            if not self._first:     # evaluate's data warnings are shown once, not every epoch
                warnings.simplefilter("ignore")
            with torch.no_grad(), autocast(trainer.device, trainer.dtype):
                for s in range(0, len(self.data), self.batch_size):
                    idx = torch.arange(s, min(len(self.data), s + self.batch_size))
                    z = model(*self.data.batch(idx, trainer.device)).float()
                    if trainer.score is not None:
                        z = trainer.score(z)
                    z = z.float()
                    yb = yt[s:s + len(idx)]
                    logp = torch.log_softmax(z, dim=1)
                    nll -= logp.gather(1, yb[:, None]).sum().double()
                    ev.update(z, yb)
            metrics = ev.compute()
        model.train(was)
        self._first = False
        trainer.row["val_loss"] = float(nll) / max(len(self.y), 1)
        trainer.row.update({f"val_{k}": float(v) for k, v in metrics.items() if k != "n"})
        trainer.row["val_seconds"] = time.perf_counter() - t1


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without improvement of ``monitor``; restore the best weights.

    ``minimize`` follows the metric registry (``semcat_kit.judge.metrics.lower_is_better``) unless set.
    NaN (e.g. no mistakes to measure) ranks below any number.
    """

    order = 20

    def __init__(self, monitor: str, patience: int, minimize: bool):
        self.monitor, self.patience, self.minimize = monitor, int(patience), bool(minimize)
        self.best = {"epoch": 0, "value": None, "state": None, "bad": 0}

    @property
    def exhausted(self) -> bool:
        return self.best["bad"] >= self.patience

    def on_train_begin(self, trainer):
        if self.exhausted:       # resumed from a checkpoint written when it stopped
            trainer.stop = True

    def on_epoch_end(self, trainer):
        stop = False
        if trainer.rank == 0:
            v = trainer.row[self.monitor]
            bv = self.best["value"]
            better = bv is None or (not math.isnan(v) and (math.isnan(bv) or (
                v < bv if self.minimize else v > bv)))
            if better:
                self.best.update(epoch=trainer.epoch, value=v, state=trainer.state_copy(), bad=0)
            else:
                self.best["bad"] += 1
            stop = self.exhausted
        if trainer.broadcast_flag(stop):
            trainer.stop = True

    def on_train_end(self, trainer):
        if self.best["state"] is not None:
            trainer.load_model_state(self.best["state"])
            trainer.best_epoch = int(self.best["epoch"])

    def state_dict(self):
        return dict(self.best)

    def load_state_dict(self, state):
        self.best = dict(state)


class Checkpoint(Callback):
    """Atomic ``last.pt`` in ``folder`` every ``every`` epochs, at the last epoch and when stopping.

    The folder is checked (created, written to) before the first epoch; a failed write is a
    :class:`CheckpointError` naming the folder. ``extra()`` adds run-identity fields (config,
    data fingerprints). Only rank 0 writes.
    """

    order = 100

    def __init__(self, folder: Path, every: int = 1, extra: Callable[[], dict] | None = None,
                 fmt: str = "semcat_kit.train/1"):
        self.folder, self.every, self.extra, self.fmt = Path(folder), max(1, int(every)), extra, fmt

    @property
    def path(self) -> Path:
        return self.folder / "last.pt"

    def on_train_begin(self, trainer):
        if trainer.rank == 0:
            check_writable_folder(self.folder, "checkpoint_dir")

    def on_epoch_end(self, trainer):
        done = trainer.epoch == trainer.epochs
        if trainer.epoch % self.every == 0 or done or trainer.stop:
            if trainer.rank == 0:
                self.save(trainer)
            trainer.last_checkpoint, trainer.checkpoint_epoch = str(self.path), trainer.epoch

    def save(self, trainer) -> str:
        state = {"format": self.fmt, "epoch": trainer.epoch, "model": trainer.state_copy(),
                 "model_config": dict(trainer.module.config), "optimizer": trainer.optimizer.state_dict(),
                 "scheduler": trainer.scheduler.state_dict(), "rng": trainer.rng_state(),
                 "grad_scaler": trainer.scaler.state_dict(),
                 "history": copy.deepcopy(trainer.history),
                 "callbacks": {cb.key: cb.state_dict() for cb in trainer.callbacks}}
        early = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
        state["best"] = dict(early.best) if early is not None else {"epoch": 0, "value": None, "state": None, "bad": 0}
        if self.extra is not None:
            state.update(self.extra())
        try:
            with atomic_path(self.path) as tmp:
                torch.save(state, tmp)
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"could not write the checkpoint {self.path} ({_short(e)}); free space in "
                                  f"{self.folder} or pass another checkpoint_dir") from None
        return str(self.path)


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"


def check_writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and prove it is writable (a probe file), else a clear error."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{what} {folder} is a file, not a folder; give a folder for the checkpoints")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / ".write-test") as tmp:
            Path(tmp).write_bytes(b"ok")
        (folder / ".write-test").unlink()
    except OSError as e:
        raise CheckpointError(f"{what} {folder} is not writable ({_short(e)}); give a folder you can write "
                              "to, or free space there") from None


class ProgressBar(Callback):
    """``tqdm`` over epochs (and over batches when an epoch has >= 50), on rank 0 only."""

    order = 90

    def __init__(self, enabled: bool = True, show: Sequence[str] = ("loss", "val_top1")):
        self.enabled, self.show = enabled, tuple(show)
        self.bar = None

    def on_train_begin(self, trainer):
        self.bar = tqdm(total=trainer.epochs, initial=trainer.epoch, desc="train", unit="epoch",
                        disable=not self.enabled or trainer.rank != 0)

    def on_epoch_end(self, trainer):
        self.bar.update(1)
        self.bar.set_postfix({k: round(trainer.row[k], 4) for k in self.show if k in trainer.row})

    def on_train_end(self, trainer):
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()


class MetricLogger(Callback):
    """Append each finished history row to a CSV file (rank 0), for watching long runs."""

    order = 95

    def __init__(self, path):
        self.path = Path(path)

    def on_epoch_end(self, trainer):
        if trainer.rank != 0:
            return
        row = trainer.row
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


# ------------------------------------------------------------------------------------ trainer
class Trainer:
    """The loop. Build it with a model, an optimizer/scheduler, a training table and a loss, add
    callbacks, call :meth:`fit`. :func:`semcat_kit.train` does all of that for you.

    Parameters
    ----------
    model : torch.nn.Module
        Takes ``table.batch(idx, device)`` as positional inputs.
    optimizer, scheduler
        Stepped once per batch.
    data : table
        ``len(data)`` rows, ``data.batch(idx, device)`` -> model inputs.
    y : numpy.ndarray (N,) int64
    loss : callable ``(outputs, y_batch, trainer) -> dict`` with a ``"total"`` tensor (and parts)
    epochs, batch_size : int
        ``batch_size`` is the *global* batch (split over ranks under torchrun).
    device : torch.device
    dtype : torch.dtype
        Forward-pass compute dtype (autocast when not float32).
    generator : torch.Generator
        Shuffling; its state is checkpointed.
    callbacks : list of Callback
    chunk_size : int, optional
        Chunked shuffling for memory-mapped tables (see :class:`BatchSampler`).
    score : callable, optional
        ``outputs -> class scores`` for validation (e.g. code scores of a codes head).
    threads : int, optional
        Torch threads while fitting (restored after); default
        :func:`semcat_kit._core.threads.choose_threads` (``SEMCAT_THREADS``, else the cores that
        other processes leave free).
    """

    def __init__(self, model, optimizer, scheduler, data, y, loss, *, epochs: int, batch_size: int,
                 device: torch.device, dtype: torch.dtype = torch.float32, generator: torch.Generator,
                 callbacks: Sequence[Callback] = (), chunk_size: int | None = None,
                 score: Callable | None = None, checkpoint_dir=None, threads: int | None = None):
        self.rank, self.world = distributed_context()
        self.threads = threads
        self.module = model
        self.model = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.data, self.loss = data, loss
        y = np.asarray(y)
        # labels held as given when integral (int32 from train(): 4 bytes an item); int64 per batch
        self.y = torch.as_tensor(y if y.dtype in (np.int32, np.int64) else y.astype(np.int64))
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.device, self.dtype, self.gen = device, dtype, generator
        # fp16 has a narrow exponent: small gradients underflow to 0 without loss scaling (bf16 and
        # fp32 need none); the scale adapts, and steps with inf/NaN gradients are skipped
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        self.sampler = BatchSampler(len(self.y), self.batch_size, generator, rank=self.rank, world=self.world,
                                    chunk_size=chunk_size)
        self.steps_per_epoch = len(self.sampler)
        self.score = score
        self.checkpoint_dir = checkpoint_dir
        # state
        self.epoch = 0              # completed epochs
        self.batch = 0
        self.history: list[dict] = []
        self.row: dict = {}
        self.stop = False
        self.targets = None
        self.best_epoch: int | None = None
        self.last_checkpoint: str | None = None
        self.checkpoint_epoch = 0
        self.part_keys: list[str] = []                   # the loss's parts ("total" first)
        self.step_values = torch.zeros(0, 0)             # (steps of the epoch, parts), on the device

    # ---------------------------------------------------------------- state
    def state_copy(self) -> dict:
        return {k: v.detach().clone().cpu() for k, v in self.module.state_dict().items()}

    def load_model_state(self, state: dict) -> None:
        self.module.load_state_dict(state)

    def rng_state(self) -> dict:
        st = {"torch": torch.get_rng_state(), "shuffle": self.gen.get_state()}
        if self.device.type == "cuda":
            st["cuda"] = torch.cuda.get_rng_state(self.device)
        return st

    def set_rng_state(self, st: dict) -> None:
        torch.set_rng_state(st["torch"])
        self.gen.set_state(st["shuffle"])
        if self.device.type == "cuda" and "cuda" in st:
            torch.cuda.set_rng_state(st["cuda"], self.device)

    def restore(self, ck: dict) -> None:
        """Continue from a checkpoint written by :class:`Checkpoint`."""
        self.module.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("grad_scaler"):          # fp16 runs (older checkpoints have none)
            self.scaler.load_state_dict(ck["grad_scaler"])
        self.set_rng_state(ck["rng"])
        self.history = list(ck["history"])
        self.epoch = int(ck["epoch"])
        self.last_checkpoint, self.checkpoint_epoch = ck.get("path"), self.epoch
        states = ck.get("callbacks", {})
        for cb in self.callbacks:
            if cb.key in states:
                cb.load_state_dict(states[cb.key])
            elif isinstance(cb, EarlyStopping) and "best" in ck:
                cb.load_state_dict(ck["best"])

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, src=0)
        return bool(t.item())

    def close_bars(self) -> None:
        for cb in self.callbacks:
            if isinstance(cb, ProgressBar):
                cb.close()

    # ---------------------------------------------------------------- loop
    def _emit(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self)

    def fit(self) -> "Trainer":
        """Run the remaining epochs (all, or those after a restored checkpoint)."""
        with torch_threads(self.threads):
            return self._fit()

    def _fit(self) -> "Trainer":
        bound_heap()      # large step temporaries mapped on their own: freed memory goes back (see _memory)
        self._emit("on_train_begin")
        try:
            while self.epoch < self.epochs and not self.stop:
                self.row = {"epoch": self.epoch + 1}
                self._emit("on_epoch_begin")
                self._train_epoch()
                self.history.append(self.row)
                self.epoch += 1
                self._emit("on_epoch_end")
        finally:
            self.close_bars()
        self._emit("on_train_end")
        if self.best_epoch is None:
            self.best_epoch = len(self.history)
        self.module.eval()
        return self

    def _train_epoch(self) -> None:
        self.model.train()
        t0 = time.perf_counter()
        batches = self.sampler.epoch()
        n_steps = len(batches)
        self.part_keys = []
        self.step_values = torch.zeros(n_steps, 0, device=self.device)
        # only the callbacks that do something per step are called per step
        per_step = [cb for cb in self.callbacks if type(cb).on_step_end is not Callback.on_step_end]
        scaled = self.scaler.is_enabled()
        non_blocking = self.device.type == "cuda"
        inner = progress(batches, desc=f"epoch {self.epoch + 1}", unit="batch", leave=False,
                     disable=not any(isinstance(c, ProgressBar) and c.enabled for c in self.callbacks)
                     or n_steps < 50 or self.rank != 0)
        try:
            for b, idx in enumerate(inner):
                self.batch = b
                yb = self.y[idx].to(self.device, torch.int64, non_blocking=non_blocking)
                with autocast(self.device, self.dtype):
                    z = self.model(*self.data.batch(idx, self.device, non_blocking=non_blocking))
                parts = self.loss(z, yb, self)
                del z
                loss = parts["total"]
                self.optimizer.zero_grad(set_to_none=True)
                if scaled:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.optimizer.step()
                self.scheduler.step()
                if not self.part_keys:        # the loss's parts, in its order ("total" first)
                    self.part_keys = ["total"] + [k for k in parts if k != "total"]
                    self.step_values = torch.zeros(n_steps, len(self.part_keys), device=self.device)
                # the step's parts stay on the device: one stacked row a step, no host sync
                self.step_values[b] = torch.stack([parts[k].detach().float() for k in self.part_keys])
                del parts, loss
                for cb in per_step:
                    cb.on_step_end(self)
                if (b + 1) % TRIM_EVERY == 0:      # freed step temporaries back to the OS: flat over an epoch
                    release_freed_memory()
        finally:
            inner.close()
        keys = self.part_keys
        if keys:      # sums of the parts over the epoch's rows: one reduction per epoch
            n = torch.tensor([float(len(i)) for i in batches], device=self.device)
            totals = (self.step_values.double() * n.double()[:, None]).sum(0).float()
        else:
            totals = torch.zeros(0, device=self.device)
        if self.world > 1:      # sums over every rank's rows
            dist.all_reduce(totals)
        got = dict(zip(keys, totals.cpu().tolist()))
        N = len(self.y)
        self.row["lr"] = self.optimizer.param_groups[0]["lr"]
        self.row["loss"] = got.pop("total", 0.0) / N
        for k in sorted(got):
            self.row[k] = got[k] / N
        self.row["seconds"] = time.perf_counter() - t0

    @property
    def step_losses(self) -> torch.Tensor:
        """(steps of the epoch,) total loss of each step so far (zeros after the current step)."""
        if not self.part_keys:
            return torch.zeros(self.step_values.shape[0], device=self.step_values.device)
        return self.step_values[:, 0]

    @property
    def step_parts(self) -> list[dict]:
        """The loss parts of each step of the epoch up to the current one, ``{name: tensor}``."""
        return [dict(zip(self.part_keys, row)) for row in self.step_values[:self.batch + 1]]

    @torch.no_grad()
    def scores(self, data, batch_size: int = 4096) -> torch.Tensor:
        """(N, C) float32 class scores of ``data`` on the CPU, in eval mode."""
        return predict_scores(self.module, data, batch_size, self.device, self.dtype, self.score)


@torch.no_grad()
def iter_scores(model, data, batch_size: int, device, dtype=torch.float32, score: Callable | None = None):
    """``(start, scores)`` of a table block by block: (block, C) float32 class scores on ``device``,
    in eval mode (training mode restored after the last block)."""
    was = model.training
    model.eval()
    try:
        with autocast(device, dtype):
            for s in range(0, len(data), batch_size):
                idx = torch.arange(s, min(len(data), s + batch_size))
                z = model(*data.batch(idx, device)).float()
                yield s, (score(z) if score is not None else z)
    finally:
        model.train(was)


@torch.no_grad()
def predict_scores(model, data, batch_size: int, device, dtype=torch.float32, score: Callable | None = None):
    """(N, C) float32 class scores of a table in batches, in eval mode (training mode restored)."""
    out = [z.cpu() for _, z in iter_scores(model, data, batch_size, device, dtype, score)]
    return torch.cat(out) if out else torch.zeros(0, getattr(model, "n_classes", 0))
