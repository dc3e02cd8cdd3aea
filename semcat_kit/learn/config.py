"""Every hyperparameter of a training run: :class:`TrainConfig`, and :meth:`TrainConfig.resolve`, the
one place where the fields left at ``"auto"`` (the budget, early stopping, the input norm) are decided
from the data.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import losses as _losses
from ..labels import soft_labels as _soft
from .._core.contracts import check_device_name, check_precision_name
from .model import FUSION_MODES

__all__ = ["TrainConfig", "AUTO", "DEFAULT_EPOCHS", "SMALL_DATA_MIN_STEPS", "ES_MIN_VAL"]

CURRICULA = _soft.SCHEDULES
FOCAL_ALPHA = _losses.WEIGHT_MODES
ALPHA_BY = ("constant", "similarity")
#: ``TrainConfig.resolve``: optimizer steps at least, and the validation size below which early stopping is off.
SMALL_DATA_MIN_STEPS = 600
ES_MIN_VAL = 1000
#: The value of a :class:`TrainConfig` field the data decides (:meth:`TrainConfig.resolve`).
AUTO = "auto"
#: Epochs of a run whose ``epochs`` is ``"auto"`` (then raised to :data:`SMALL_DATA_MIN_STEPS` steps).
DEFAULT_EPOCHS = 30
LABEL_REPRS = ("onehot", "codes")
SOLVERS = ("auto", "lbfgs", "minibatch")
ES_MODES = ("auto", "min", "max")


# ------------------------------------------------------------------------------------ config
@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (validated on construction).

    Parameters
    ----------
    smoothing : str
        Soft-label kind of the KL term, a key of :data:`semcat_kit.labels.soft_labels.TARGET_KINDS`
        (``"onehot"``, ``"uniform"``, ``"topk"``, ``"semantic"``, ``"threshold"``, ``"tree"``).
    k : int
        Neighbours per class used by ``topk`` / ``semantic`` / ``tree`` soft labels.
    alpha : float in [0, 1]
        Mass moved off the true class (at epoch 0 under a curriculum).
    alpha_final : float in [0, 1]
        Alpha reached at the last epoch by a non-constant curriculum.
    alpha_by : {"constant", "similarity"}
        ``similarity``: per-class mass ``alpha_c = min(0.5, alpha * s_c / mean(s))`` growing with the
        mean similarity ``s_c`` of the class's neighbours (:func:`semcat_kit.labels.similarity.class_alpha`;
        neighbour kinds and ``tree`` only); ``constant``: ``alpha`` for every class.
    temperature : float > 0
        ``semantic`` / ``threshold``: neighbour weights ``softmax(sim / temperature)``.
    sim_threshold : float in [-1, 1]
        ``threshold``: only neighbours with cosine similarity ``>= sim_threshold`` get mass.
    tree_beta : float >= 0
        ``tree``: neighbour weights ``softmax(-beta * d_LCA)``.
    curriculum : {"constant", "linear", "cosine", "step"}
        Alpha per epoch; soft targets are rebuilt each epoch with ``alpha = schedule(epoch)``.
    curriculum_steps : int >= 2
        Number of stages of the ``step`` curriculum.
    focal_gamma : float >= 0
        Focal loss exponent (0 = cross-entropy, the default: with a converged head it is as good as or
        better than γ=2 on the tutorial and the toys catalog, ``docs/training_budget_*.md``).
    focal_alpha : {"none", "inverse", "effective"}
        Per-class weights of the focal term from the training class counts.
    focal_beta : float in [0, 1)
        Beta of the ``effective`` class weights.
    kl_weight : float >= 0
        Weight of the KL term.
    focal_weight : float >= 0
        Weight of the focal term (``0`` with ``kl_weight > 0``: KL only, i.e. soft-target
        cross-entropy). ``L = focal_weight * focal + kl_weight * KL``.
    label_repr : {"onehot", "codes"}
        Class outputs, or binary taxonomy codes trained with BCE (requires ``smoothing="onehot"``).
    fusion, proj_dim, hidden, dropout, modality_dropout, input_norm
        :class:`semcat_kit.learn.model.FusionHead` arguments. The default is the linear head on the
        encoders' vectors (``hidden=0, proj_dim=0``): its objective is convex, so ``solver="auto"``
        fits it to convergence (with one-hot targets, LogisticRegression's optimum).
        ``hidden=512, proj_dim=256`` is the MLP head. ``input_norm="auto"``: a ``LayerNorm`` on the
        inputs of an MLP head (it needs one: without it the full-batch fit of the MLP collapsed to
        one class on MiniLM titles) and of a head trained in minibatches; none on the linear head
        fitted full-batch (convex, as measured best). See :meth:`resolve`.
    lr, weight_decay : float
        AdamW learning rate and weight decay.
    warmup : float in [0, 1)
        Fraction of all steps with a linear learning-rate warmup (then cosine decay to 0).
    epochs : int >= 1 or "auto"
        Minibatch epochs. ``"auto"`` (default): :data:`DEFAULT_EPOCHS`, raised to ``min_steps``.
        An explicit number is the whole budget (``min_steps="auto"`` then means 0).
    min_steps : int >= 0 or "auto"
        Train at least this many optimizer steps: the run has
        ``max(epochs, ceil(min_steps / steps_per_epoch))`` epochs (:meth:`epochs_for`), so a small
        catalog (few batches per epoch) still gets a real budget. ``"auto"``:
        :data:`SMALL_DATA_MIN_STEPS` when ``epochs`` is ``"auto"``, else 0.
    batch_size, seed : int
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Forward-pass compute dtype (autocast): ``auto`` is bf16 on CUDA, fp32 elsewhere.
    shuffle_chunk : int >= 1
        Memory-mapped (lazy) training tables are shuffled in blocks of this many consecutive rows:
        blocks in random order, rows permuted within windows of 64 blocks (see
        :class:`semcat_kit.learn.trainer.BatchSampler`), so reads stay contiguous and local while batches
        still mix 64 places of the table. In-memory tables use a full permutation.
    check_every : int >= 0
        Check the loss for NaN/inf every this many steps (one host sync per check); 0 = auto
        (every step on CPU, every 25 on CUDA).
    early_stopping : str, None or "auto"
        Validation metric to watch (``"val_top1"``, ``"val_loss"``, ``"val_mistake_severity"``,
        ``"val_hdist@5"``, ...); ``None`` trains all epochs. Ignored without validation data.
        ``"auto"`` (default): ``"val_top1"`` when the validation split has at least
        :data:`ES_MIN_VAL` items, else ``None`` (below that, top-1 moves by more than its standard
        error from epoch to epoch; stopping on it cost 0.5 pt top-1 on the tutorial).
    early_stopping_mode : {"auto", "min", "max"}
        ``auto`` follows the metric's direction in :data:`semcat_kit.judge.metrics.METRICS` (loss, severity,
        hdist, ece are minimised; accuracies maximised).
    patience : int >= 1
        Epochs without improvement before stopping; the best weights are restored.
    checkpoint_every : int >= 1
        Write a checkpoint every this many epochs (and at the end) when ``checkpoint_dir`` is set.
    solver : {"auto", "lbfgs", "minibatch"}
        How the head is fitted. ``"lbfgs"``: the whole training set at every step, to convergence
        (:mod:`semcat_kit.learn.solver`: L-BFGS, the L2 strength chosen on the validation split; the
        fields ``epochs, min_steps, batch_size, lr, weight_decay, warmup, dropout,
        modality_dropout, early_stopping, patience`` do not apply). ``"minibatch"``: AdamW over
        shuffled batches for a step budget (:mod:`semcat_kit.learn.trainer`): for tables that do
        not fit in memory (the store), several processes (torchrun), checkpoints and callbacks.
        ``"auto"``: ``lbfgs`` for a linear head (``hidden=0, proj_dim=0``, convex) when the
        training table is in memory and its features fit in ``solver.IN_MEMORY_BYTES`` (2 GB),
        its output layer has at most ``training.FULL_BATCH_MAX_PARAMS`` (1,000,000) parameters
        (classes x (inputs + 3); L-BFGS keeps 2 x 10 copies of them per stacked head: about 600
        classes of the 1,664 MiniLM + EfficientNet inputs, 2,580 text-only), and none of those
        minibatch-only features is asked for; the choice and its reason are in
        :attr:`TrainRun.solver` (and :meth:`SuiteResult.solver` for a suite).
    C : float or "val"
        ``lbfgs`` only: inverse L2 strength as in scikit-learn's ``LogisticRegression``: the
        objective is ``mean_i loss_i / (focal_weight + kl_weight) + ||W||^2 / (2 C N)`` (weights, not
        biases). ``"val"`` picks it from ``Cs`` by validation top-1 (ties: the smaller C), from a
        stratified tenth of the training rows when no validation split is given (then refitted on
        all of them).
    Cs : tuple of float
        The grid for ``C="val"``, walked from its second-largest C towards the side that validates
        better (:func:`semcat_kit.learn.solver.fit_path`: the C a full sweep would choose, with fewer
        fits); each C from the same start, as LogisticRegression.
    max_iter : int >= 1
        ``lbfgs`` only: L-BFGS steps per C at most.
    tol : float > 0
        ``lbfgs`` only: stop when the largest gradient component is below ``tol`` (as
        scikit-learn's ``LogisticRegression(tol=...)``) or the objective no longer decreases.

    Notes
    -----
    Fields left at ``"auto"`` are decided by the data in one place, :meth:`resolve`, which
    :func:`train` calls with the sizes of its training and validation sets: every path that trains
    (``sk.train``, the suite, ``Pipeline`` / ``Workspace``, ``semcat train`` / ``tune``, the
    estimator) gets the same decision, and the run's ``config`` holds the resolved values (its repr
    says which were decided). A number or ``None`` you give is kept.
    """

    smoothing: str = "onehot"
    k: int = 20
    alpha: float = 0.1
    alpha_final: float = 0.0
    alpha_by: str = "constant"
    temperature: float = 0.1
    sim_threshold: float = 0.5
    tree_beta: float = 1.0
    curriculum: str = "constant"
    curriculum_steps: int = 2
    focal_gamma: float = 0.0
    focal_alpha: str = "none"
    focal_beta: float = 0.999
    kl_weight: float = 1.0
    focal_weight: float = 1.0
    label_repr: str = "onehot"
    fusion: str = "concat"
    proj_dim: int = 0
    hidden: int = 0
    dropout: float = 0.2
    modality_dropout: float = 0.1
    input_norm: Any = AUTO
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: float = 0.05
    epochs: Any = AUTO
    min_steps: Any = AUTO
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    early_stopping: Any = AUTO
    early_stopping_mode: str = "auto"
    patience: int = 5
    checkpoint_every: int = 1
    check_every: int = 0
    shuffle_chunk: int = 1024
    solver: str = "auto"
    C: Any = "val"
    Cs: tuple = (0.1, 1.0, 10.0, 100.0)
    max_iter: int = 500
    tol: float = 1e-4

    def __post_init__(self) -> None:
        def choice(name, allowed):
            v = getattr(self, name)
            if v not in allowed:
                raise ValueError(f"TrainConfig.{name} = {v!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")

        def number(name, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
            v = getattr(self, name)
            ok_type = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.integer, np.floating))
            if isinstance(v, bool) or not ok_type or (not integer and not math.isfinite(float(v))):
                kind = "an integer" if integer else "a finite number"
                raise ValueError(f"TrainConfig.{name} must be {kind}, not {v!r}")
            bad = ((lo is not None and (v <= lo if lo_open else v < lo))
                   or (hi is not None and (v >= hi if hi_open else v > hi)))
            if bad:
                rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{')' if hi_open or hi is None else ']'}"
                raise ValueError(f"TrainConfig.{name} = {v!r} is out of range; allowed: {rng}")
            setattr(self, name, int(v) if integer else float(v))

        choice("smoothing", tuple(_soft.TARGET_KINDS))
        choice("curriculum", CURRICULA)
        choice("focal_alpha", FOCAL_ALPHA)
        choice("label_repr", LABEL_REPRS)
        choice("fusion", FUSION_MODES)
        choice("early_stopping_mode", ES_MODES)
        for name in ("k", "curriculum_steps", "proj_dim", "hidden", "epochs", "batch_size", "patience",
                     "checkpoint_every"):
            if name == "epochs" and self.epochs == AUTO:
                continue
            number(name, lo=2 if name == "curriculum_steps" else (0 if name in ("hidden", "proj_dim") else 1), integer=True)
        if self.min_steps != AUTO:
            number("min_steps", lo=0, integer=True)
        choice("alpha_by", ALPHA_BY)
        if self.input_norm != AUTO:
            if not isinstance(self.input_norm, (bool, np.bool_)):
                raise ValueError(f"TrainConfig.input_norm must be True, False or 'auto', not {self.input_norm!r}")
            self.input_norm = bool(self.input_norm)
        number("seed", lo=0, integer=True)
        number("check_every", lo=0, integer=True)
        number("shuffle_chunk", lo=1, integer=True)
        choice("solver", SOLVERS)
        number("max_iter", lo=1, integer=True)
        number("tol", 0.0, lo_open=True)
        if isinstance(self.Cs, (list, np.ndarray)):
            self.Cs = tuple(self.Cs)
        if (not isinstance(self.Cs, tuple) or not self.Cs
                or any(isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating))
                       or not (math.isfinite(float(c)) and c > 0) for c in self.Cs)):
            raise ValueError(f"TrainConfig.Cs must be a non-empty tuple of positive numbers, not {self.Cs!r}")
        self.Cs = tuple(float(c) for c in self.Cs)
        if isinstance(self.C, str):
            if self.C != "val":
                raise ValueError(f"TrainConfig.C must be a positive number or 'val' (chosen on the validation split), "
                                 f"not {self.C!r}")
        else:
            number("C", 0.0, lo_open=True)
        number("sim_threshold", -1.0, 1.0)
        check_precision_name(self.precision, name="TrainConfig.precision")
        for name in ("alpha", "alpha_final"):
            number(name, 0.0, 1.0)
        number("temperature", 0.0, lo_open=True)
        for name in ("tree_beta", "focal_gamma", "kl_weight", "focal_weight", "weight_decay"):
            number(name, 0.0)
        if self.focal_weight == 0 and self.kl_weight == 0 and self.label_repr == "onehot":
            raise ValueError("TrainConfig.focal_weight and kl_weight are both 0: nothing to train; set one > 0")
        if self.alpha_by == "similarity" and self.smoothing in ("onehot", "uniform"):
            raise ValueError(f"TrainConfig.alpha_by='similarity' scales each class's mass by its neighbours' "
                             f"similarity; smoothing={self.smoothing!r} has no neighbours (use a neighbour kind or "
                             "'tree', or alpha_by='constant')")
        number("focal_beta", 0.0, 1.0, hi_open=True)
        for name in ("dropout", "modality_dropout", "warmup"):
            number(name, 0.0, 1.0, hi_open=True)
        number("lr", 0.0, lo_open=True)
        check_device_name(self.device, name="TrainConfig.device")
        if self.early_stopping not in (None, AUTO) and (not isinstance(self.early_stopping, str)
                                                        or not self.early_stopping.startswith("val_")):
            raise ValueError(f"TrainConfig.early_stopping = {self.early_stopping!r}: name a validation metric "
                             "such as 'val_top1', 'val_loss', 'val_mistake_severity', 'val_hdist@5', None, "
                             "or 'auto' (decided by the validation split's size)")
        if self.label_repr == "codes" and self.smoothing != "onehot":
            raise ValueError(f"TrainConfig.label_repr='codes' trains with the BCE of taxonomy codes, where soft labels "
                             f"do not apply; set smoothing='onehot' (got smoothing={self.smoothing!r})")

    def resolve(self, n_train: int, n_val: int = 0, solver: str | None = None) -> "TrainConfig":
        """This config with every ``"auto"`` field decided for ``n_train`` training and ``n_val``
        validation items (the one place a run's budget is decided; :func:`train` calls it).

        * ``epochs="auto"``: :data:`DEFAULT_EPOCHS`; ``min_steps="auto"``: :data:`SMALL_DATA_MIN_STEPS`
          when ``epochs`` is ``"auto"`` (so a catalog of a few thousand items is not stopped after
          ~90 steps), else 0 (an explicit epoch count is the whole budget);
        * ``early_stopping="auto"``: ``"val_top1"`` when ``n_val >= ES_MIN_VAL``, else ``None``;
        * ``input_norm="auto"``: ``True`` for an MLP head (``hidden`` or ``proj_dim`` > 0) and for a
          linear head trained in minibatches (``solver`` is the method :func:`choose_solver` chose:
          AdamW at ``lr=1e-3`` on unnormalised MiniLM vectors reached 0.40 top-1 in 12 epochs where
          the normalised inputs gave 0.75+), ``False`` for the linear head fitted full-batch (convex;
          measured best); left ``"auto"`` for a linear head while ``solver`` is not known.

        Measured in ``docs/training_budget_*.md``. What was decided is in :attr:`decided` and in the
        repr; a resolved config resolves to itself.
        """
        for name, v in (("n_train", n_train), ("n_val", n_val)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, not {v!r}")
        d = {}
        if self.epochs == AUTO:
            d["epochs"] = DEFAULT_EPOCHS
        if self.min_steps == AUTO:
            d["min_steps"] = SMALL_DATA_MIN_STEPS if self.epochs == AUTO else 0
        if self.early_stopping == AUTO:
            d["early_stopping"] = "val_top1" if n_val >= ES_MIN_VAL else None
        if self.input_norm == AUTO and (self.hidden > 0 or self.proj_dim > 0 or solver is not None):
            d["input_norm"] = self.hidden > 0 or self.proj_dim > 0 or solver == "minibatch"
        if not d:
            return self
        out = dataclasses.replace(self, **d)
        out.__dict__["_decided"] = {**self.decided, **d}
        out.__dict__["_sizes"] = (int(n_train), int(n_val))
        return out

    @property
    def resolved(self) -> bool:
        """Whether no field is ``"auto"`` any more (:meth:`resolve`)."""
        return AUTO not in (self.epochs, self.min_steps, self.early_stopping, self.input_norm)

    @property
    def decided(self) -> dict:
        """Fields :meth:`resolve` decided from the data (they were ``"auto"``), ``{name: value}``."""
        return dict(self.__dict__.get("_decided", {}))

    def epochs_for(self, n_train: int) -> int:
        """Epochs a minibatch run on ``n_train`` items trains:
        ``max(epochs, ceil(min_steps / ceil(n_train / batch_size)))`` (``"auto"`` fields resolved)."""
        cfg = self.resolve(int(n_train))
        steps_per_epoch = max(1, math.ceil(int(n_train) / cfg.batch_size))
        return max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))

    def budget(self, n_train: int) -> str:
        """The minibatch budget on ``n_train`` items, in words: epochs, steps per epoch, steps, and
        why (``min_steps``)."""
        cfg = self.resolve(int(n_train))
        spe = max(1, math.ceil(int(n_train) / cfg.batch_size))
        ep = cfg.epochs_for(n_train)
        why = (f"raised from epochs={cfg.epochs} to reach min_steps={cfg.min_steps}" if ep > cfg.epochs
               else f"epochs={cfg.epochs}" + (f" (already >= min_steps={cfg.min_steps})" if cfg.min_steps else ""))
        stop = ("; early stopping: decided by the val split's size" if self.early_stopping == AUTO
                else f"; early stopping on {cfg.early_stopping} (patience {cfg.patience})" if cfg.early_stopping
                else "; no early stopping")
        return f"{ep} epochs x {spe} steps of {cfg.batch_size} = {ep * spe:,} AdamW steps ({why}){stop}"

    # skorch-style explicit round trip
    def to_dict(self) -> dict:
        """Plain dict of every field (JSON-serialisable); :meth:`from_dict` rebuilds the config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Rebuild from :meth:`to_dict` output; unknown keys are an error (naming them)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known fields: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (validated); a changed field is no longer :attr:`decided`."""
        out = dataclasses.replace(self, **changes)
        kept = {k: v for k, v in self.decided.items() if k not in changes}
        if kept:
            out.__dict__["_decided"] = kept
            out.__dict__["_sizes"] = self.__dict__.get("_sizes")
        return out

    @property
    def minimize(self) -> bool:
        """Whether ``early_stopping`` is minimised."""
        if self.early_stopping_mode != "auto":
            return self.early_stopping_mode == "min"
        from ..judge.metrics import lower_is_better

        return lower_is_better(self.early_stopping or "")

    def __repr__(self) -> str:
        decided = self.decided
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default and f.name not in decided]
        text = f"TrainConfig({', '.join(changed)})" if changed or decided else "TrainConfig()  # all defaults"
        if decided:
            sizes = self.__dict__.get("_sizes")
            text += (f"  # decided by the data{f' ({sizes[0]:,} train, {sizes[1]:,} val)' if sizes else ''}: "
                     + ", ".join(f"{k}={v!r}" for k, v in decided.items()))
        return text
