"""Training the fusion head: :func:`train` (the one-call entry) and :class:`TrainRun`; its
:class:`~semcat_kit.learn.config.TrainConfig` lives in :mod:`semcat_kit.learn.config`.

The loop itself, and what happens around it (curriculum, validation, early stopping, checkpoints,
divergence stop, progress, logging), lives in :mod:`semcat_kit.learn.trainer` as callbacks over one
history; :func:`train` validates the inputs, builds the head, the optimizer and the callbacks,
and runs it. The objective per batch (``label_repr="onehot"``) is

    L = focal(z, y; gamma, alpha_c) + kl_weight * KL(t_y || softmax(z)),

with ``t_y`` the (sparse) soft target of class ``y`` built by :func:`soft_labels.build` with the
smoothing amount ``a(epoch)`` of the curriculum (:func:`soft_labels.schedule`). With
``label_repr="codes"`` the head outputs one logit per taxonomy node and is trained with the BCE of
the binary taxonomy codes; class probabilities are ``softmax(code_scores(bits, codes))``.

Embeddings are batched by a shuffled index (no per-sample Python, no DataLoader). AdamW with a
linear warmup then cosine decay of the learning rate (stepped per batch).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import losses as _losses
from ..labels import soft_labels as _soft
from .._core.contracts import EmbeddingTable, as_embedding_table, as_labels, resolve_device, resolve_precision
from .config import (AUTO, DEFAULT_EPOCHS, ES_MIN_VAL, SMALL_DATA_MIN_STEPS,  # noqa: F401 (sk.learn.training.*)
                     TrainConfig)
from .model import FusionHead
from .trainer import (Checkpoint, CheckpointError, CurriculumTargets, DivergenceStop, EarlyStopping,  # noqa: F401
                      MetricLogger, ProgressBar, Trainer, TrainingDivergedError, Validation, iter_scores,
                      predict_scores)

__all__ = ["TrainConfig", "TrainRun", "train", "train_stacked", "choose_solver", "TrainingDivergedError",
           "load_checkpoint"]

CHECKPOINT_FORMAT = "semcat_kit.train/1"
# fields that may differ between the run that wrote a checkpoint and the run that resumes it
_RESUME_FREE = ("device", "checkpoint_every", "check_every")   # shuffle_chunk changes the order: not free


# ------------------------------------------------------------------------------------ data


def _prepare(emb, what: str) -> EmbeddingTable:
    return as_embedding_table(emb, what, empty="warn")   # rows with no usable modality are named


def _labels(labels, taxonomy, n: int, what: str) -> np.ndarray:
    return as_labels(labels, n, taxonomy, name=f"{what} labels", against=f"{what} embeddings")


def _fingerprint(y: np.ndarray) -> str:
    """sha1 of the labels as int64 bytes, hashed in blocks (no whole int64 copy + bytes copy)."""
    h = hashlib.sha1()
    for a in range(0, len(y), 1 << 20):
        h.update(np.ascontiguousarray(y[a:a + (1 << 20)], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _truncate(neighbors, k: int):
    from ..labels.similarity import Neighbors

    if neighbors is None or neighbors.k <= k:
        return neighbors
    return Neighbors(neighbors.indices[:, :k].copy(), neighbors.sims[:, :k].copy())


# ------------------------------------------------------------------------------------ run
@dataclass
class TrainRun:
    """A trained head with everything needed to use, inspect and export it.

    Attributes
    ----------
    model : FusionHead
        In eval mode, on the training device, with the best weights (early stopping) or the last.
    config : TrainConfig
    history : pandas.DataFrame
        One row per epoch (1-based ``epoch``): ``alpha, lr, loss, focal, kl`` (or ``bce``),
        ``seconds`` (training time), ``val_seconds`` and ``val_*`` metrics
        (``val_loss`` = mean NLL of the true class, plus :func:`semcat_kit.evaluate`'s metrics).
    taxonomy, neighbors
        As given to :func:`train`.
    encoder_meta : dict
        ``emb.meta`` of the training embeddings (which encoders produced them).
    best_epoch : int
        Epoch whose weights the model holds (``solver="lbfgs"``: the position of the chosen C in
        the path, 1-based; the history has one row per C).
    solver : dict
        ``method`` (``"lbfgs"`` or ``"minibatch"``) and ``why`` (the reason ``solver="auto"`` chose
        it); for ``lbfgs`` also ``C`` (chosen), ``iterations``, ``converged``; for ``minibatch``
        ``budget`` (:meth:`TrainConfig.budget`: epochs, steps and why).
    codes : numpy.ndarray or None
        (C, B) taxonomy codes when ``label_repr="codes"``.
    """

    model: FusionHead
    config: TrainConfig
    history: pd.DataFrame
    taxonomy: Any
    neighbors: Any = None
    encoder_meta: dict = field(default_factory=dict)
    best_epoch: int = 0
    codes: np.ndarray | None = None
    checkpoint_dir: Path | None = None
    solver: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        last = self.history.iloc[-1].to_dict() if len(self.history) else {}
        val = {k: round(v, 4) for k, v in last.items() if k.startswith("val_") and k != "val_seconds"
               and isinstance(v, float) and k in ("val_top1", "val_loss", "val_mistake_severity")}
        if self.solver.get("method") == "lbfgs":
            return (f"TrainRun({self.taxonomy.n_classes} classes, solver='lbfgs' (C={self.solver.get('C')}, "
                    f"{self.solver.get('iterations')} steps, converged={self.solver.get('converged')}), "
                    f"fusion={self.config.fusion!r}, smoothing={self.config.smoothing!r}, last={val})")
        return (f"TrainRun({self.taxonomy.n_classes} classes, {len(self.history)} epochs, best_epoch={self.best_epoch}, "
                f"fusion={self.config.fusion!r}, smoothing={self.config.smoothing!r}, last={val})")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def predict_logits(self, emb, batch_size: int = 4096) -> np.ndarray:
        """(N, C) float32 class scores in eval mode: logits, or code scores for ``label_repr="codes"``
        (so ``softmax`` of them is :meth:`predict_proba`)."""
        return _predict_scores(self.model, emb, self.codes, batch_size, "emb").numpy()

    def evaluate(self, emb, labels, neighbors=None, ks=(1, 5, 20), crm: bool = False, batch_size: int = 4096):
        """:func:`semcat_kit.evaluate` of this head on ``emb``, streamed: the metrics of
        ``evaluate(self.predict_proba(emb), labels, ...)`` (equal up to float summation order)
        without the (N, C) probability matrix -- blocks of ``batch_size`` rows go through a
        :class:`semcat_kit.judge.streaming.StreamingEvaluator` on the head's device.

        Parameters
        ----------
        emb : Embeddings (or an (N, d) array, taken as text)
        labels : array (N,)
            Class indices or label paths.
        neighbors : Neighbors, optional
            Default: the run's (adds ``nbrs@k``).
        ks, crm
            As in :func:`semcat_kit.evaluate`.
        """
        from ..judge.streaming import StreamingEvaluator

        data, device, score = _score_table(self.model, emb, self.codes, "emb")
        y = _labels(labels, self.taxonomy, len(data), "evaluation")
        nb = self.neighbors if neighbors is None else neighbors
        ev = StreamingEvaluator(self.taxonomy, neighbors=nb, ks=ks, crm=crm, from_logits=True)
        for s, z in iter_scores(self.model, data, batch_size, device, torch.float32, score):
            ev.update(z, y[s:s + len(z)])
        return ev.compute()

    @torch.no_grad()
    def predict_proba(self, emb, batch_size: int = 4096) -> np.ndarray:
        """(N, C) float32 class probabilities ``softmax(predict_logits(emb))``."""
        s = _predict_scores(self.model, emb, self.codes, batch_size, "emb")
        return torch.softmax(s, dim=1).numpy()


def _init_code_bias(model: FusionHead, codes: np.ndarray, y: np.ndarray) -> None:
    """Start each bit's output bias at the log-odds of its frequency among the training labels.

    Most taxonomy bits are 0 for most products; from a zero bias the BCE first spends many epochs
    pushing every bit down (the prior initialisation of Lin et al. 2017, "Focal Loss").
    ``b_j = log(f_j / (1 - f_j))``, ``f_j`` the share of training items whose code has bit ``j``,
    clipped to ``[1/(2N), 1 - 1/(2N)]``.
    """
    n = max(len(y), 1)
    freq = np.asarray(codes, dtype=np.float64)[np.asarray(y)].mean(0) if len(y) else np.full(codes.shape[1], 0.5)
    freq = np.clip(freq, 0.5 / n, 1 - 0.5 / n)
    with torch.no_grad():
        last = model.mlp[-1]
        last.bias.copy_(torch.as_tensor(np.log(freq / (1 - freq)), dtype=last.bias.dtype))


def _code_scorer(codes_t):
    if codes_t is None:
        return None
    return lambda z: _soft.code_scores(z, codes_t)


def _score_table(model, emb, codes, what):
    data = as_embedding_table(emb, what).fit_to(model.text_dim if model.text_proj is not None else None,
                                                model.image_dim if model.image_proj is not None else None, what)
    device = next(model.parameters()).device
    codes_t = torch.as_tensor(codes, device=device) if codes is not None else None
    return data, device, _code_scorer(codes_t)


def _predict_scores(model, emb, codes, batch_size, what) -> torch.Tensor:
    data, device, score = _score_table(model, emb, codes, what)
    return predict_scores(model, data, batch_size, device, torch.float32, score)


def _adamw(model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all parameters: ~3-4x faster steps on CPU) where supported."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_lambda(total_steps: int, warmup: float):
    warm = int(round(warmup * total_steps))

    def f(step: int) -> float:
        if warm > 0 and step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    return f


def load_checkpoint(path) -> dict:
    """Read a training checkpoint (a ``.pt`` file, or a checkpoint folder's ``last.pt``).

    Raises ``FileNotFoundError`` when there is none and ``ValueError`` naming the file when it is
    truncated, corrupted or not a checkpoint (only tensors and plain data are ever unpickled).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "last.pt"
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}; give a checkpoint file or a checkpoint_dir holding last.pt")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/UnpicklingError/EOFError/... here
        # never pass on torch's advice to retry with weights_only=False: that would run pickled code
        why = str(e).splitlines()[0] if str(e) and "weights_only" not in str(e) else "unreadable content"
        raise ValueError(f"{p} is not a readable semcat_kit training checkpoint ({type(e).__name__}: {why}): "
                         "it is truncated, corrupted or not a checkpoint. Resume from an intact copy "
                         "or train again without resume=") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p} is not a semcat_kit training checkpoint (format {CHECKPOINT_FORMAT}); "
                         "give a file written by sk.train(..., checkpoint_dir=...)")
    ck["path"] = str(p)
    return ck


def _emb_fingerprint(data: EmbeddingTable, meta: dict | None) -> str:
    """Identity of the training embeddings: shapes, encoders and a strided sample of rows (O(1) in N)."""
    h = hashlib.sha1()
    h.update(repr((len(data), data.text_dim, data.image_dim)).encode())
    h.update(json.dumps({k: (v.get("fingerprint") if isinstance(v, dict) else None) for k, v in (meta or {}).items()},
                        sort_keys=True).encode())
    n = len(data)
    rows = torch.unique(torch.linspace(0, max(n - 1, 0), steps=min(n, 256)).long()) if n else torch.zeros(0).long()
    for x, m in ((data.text, data.text_mask), (data.image, data.image_mask)):
        if x is not None:
            sample = x[rows] if torch.is_tensor(x) else torch.from_numpy(np.asarray(x[rows.numpy()], dtype=np.float32))
            h.update(np.ascontiguousarray(sample.float().numpy()).tobytes())
            h.update(np.ascontiguousarray(m[rows].numpy()).tobytes())
    return h.hexdigest()[:16]


def _training_inputs(emb, labels, val, *, taxonomy, neighbors, allow_unseen_val_classes: bool):
    """``(data, y, vdata, yv)``: the checked training (and validation) tables and class indices."""
    C = taxonomy.n_classes
    data = _prepare(emb, "emb")
    y = _labels(labels, taxonomy, len(data), "train")
    y = y.astype(np.int32) if C < np.iinfo(np.int32).max else y     # 4 bytes an item held through training
    if len(data) == 0:
        raise ValueError("no training rows")
    vdata = yv = None
    if val is not None:
        if not (isinstance(val, (tuple, list)) and len(val) == 2):
            raise ValueError("val must be a pair (embeddings, labels)")
        vdata = _prepare(val[0], "val emb")
        yv = _labels(val[1], taxonomy, len(vdata), "val")
        if len(yv) == 0:
            raise ValueError("val has no rows; pass val=None to train without validation")
        for name in ("text", "image"):
            a, b = getattr(data, name), getattr(vdata, name)
            if a is not None and b is not None and a.shape[1] != b.shape[1]:
                raise ValueError(f"val emb.{name} has dimension {b.shape[1]} but training emb.{name} has "
                                 f"{a.shape[1]}; encode both with the same encoder")
        unseen = np.setdiff1d(np.unique(yv), np.unique(y))
        if len(unseen) and not allow_unseen_val_classes:
            names = ", ".join(repr(taxonomy.classes[c]) for c in unseen[:10])
            more = f" and {len(unseen) - 10} more" if len(unseen) > 10 else ""
            raise ValueError(f"{len(unseen)} validation class(es) never appear in training: {names}{more}. Split with "
                             "sk.split (stratified), drop them, or pass allow_unseen_val_classes=True")
    if neighbors is not None and neighbors.n_classes != C:
        raise ValueError(f"neighbors cover {neighbors.n_classes} classes but the taxonomy has {C}")
    return data, y, vdata, yv


# ------------------------------------------------------------------------------------ train
def train(emb, labels, *, taxonomy, neighbors=None, config: TrainConfig | None = None, val=None,
          checkpoint_dir=None, resume=None, overwrite: bool = False, progress: bool = True,
          allow_unseen_val_classes: bool = False, callbacks=(), log_csv=None) -> TrainRun:
    """Train a :class:`FusionHead` on embeddings (one call over :class:`semcat_kit.learn.trainer.Trainer`).

    The objective per batch (``label_repr="onehot"``) is

        L = focal(z, y; gamma, alpha_c) + kl_weight * KL(t_y || softmax(z)),

    with ``t_y`` the sparse soft target of class ``y`` (:func:`semcat_kit.labels.soft_labels.build`, the
    kind ``config.smoothing`` from the registry) at the curriculum's alpha of the epoch. With
    ``label_repr="codes"``: the BCE of the binary taxonomy codes.

    Parameters
    ----------
    emb : Embeddings or array (N, d)
        Training embeddings (a bare array is taken as text embeddings).
    labels : array-like (N,)
        Class indices or label paths (mapped with ``taxonomy.index_of``, aliases accepted).
    taxonomy : Taxonomy
    neighbors : similarity.Neighbors, optional
        Needed by the soft-label kinds that use neighbours (``topk``, ``semantic``, ``threshold``;
        truncated to ``config.k``); also gives the ``val_nbrs@k`` metrics.
    config : TrainConfig, optional
        Default ``TrainConfig()``; with ``resume`` and no config, the checkpoint's config.
    val : (emb, labels), optional
        Validation data: per-epoch metrics and early stopping.
    checkpoint_dir : path, optional
        ``last.pt`` is written there atomically every ``config.checkpoint_every`` epochs. A folder
        that already holds a checkpoint is refused unless ``resume`` or ``overwrite`` is given.
    resume : path, optional
        A checkpoint file or folder; training continues from it and ends with the same weights as
        an uninterrupted run. The config and the training data (labels and embeddings) must match.
    overwrite : bool
        Replace an earlier run's checkpoint in ``checkpoint_dir``.
    progress : bool
        Show a ``tqdm`` bar over epochs.
    allow_unseen_val_classes : bool
        Validation classes absent from training are an error unless this is True.
    callbacks : sequence of Callback
        Extra :class:`semcat_kit.learn.trainer.Callback` objects run with the built-in ones.
    log_csv : path, optional
        Append each epoch's history row to this CSV as training goes (:class:`MetricLogger`).

    Returns
    -------
    TrainRun

    Raises
    ------
    ValueError
        Bad input, before any epoch: unknown labels, NaN/inf embedding rows, length or dimension
        mismatches, validation classes unseen in training, missing neighbours, a checkpoint folder
        holding another run.
    CheckpointError
        The checkpoint folder is a file, not writable, or a write failed (names the folder).
    TrainingDivergedError
        The loss became NaN/inf (the message names the epoch and batch; the last good checkpoint
        is kept).
    """
    from ..judge.metrics import metric_names

    ck = load_checkpoint(resume) if resume is not None else None
    if config is None:
        config = TrainConfig.from_dict(ck["config"]) if ck is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, not {type(config).__name__}")
    C = taxonomy.n_classes
    data, y, vdata, yv = _training_inputs(emb, labels, val, taxonomy=taxonomy, neighbors=neighbors,
                                          allow_unseen_val_classes=allow_unseen_val_classes)
    cfg = config.resolve(len(y), len(yv) if vdata is not None else 0)   # the "auto" fields, for this data
    kind = _soft.kind_info(cfg.smoothing)
    if kind.needs_neighbors and neighbors is None:
        raise ValueError(f"smoothing={cfg.smoothing!r} needs neighbors=... (sk.similarity.label_neighbors of the "
                         "class-name embeddings); or use smoothing='tree', 'uniform' or 'onehot'")
    nb_k = _truncate(neighbors, cfg.k)
    if vdata is not None and cfg.early_stopping is not None and cfg.early_stopping != "val_loss":
        names = metric_names(taxonomy, neighbors=neighbors is not None)   # from the registry, nothing computed
        known = ["val_loss"] + [f"val_{k}" for k in names if k != "n"]
        if cfg.early_stopping not in known:
            raise ValueError(f"TrainConfig.early_stopping={cfg.early_stopping!r} is not a validation metric of this "
                             f"run; choose one of {known}")
    device = resolve_device(cfg.device, name="TrainConfig.device")
    dtype = resolve_precision(cfg.precision, device, name="TrainConfig.precision")
    codes = _soft.taxonomy_codes(taxonomy) if cfg.label_repr == "codes" else None
    text_dim, image_dim = data.text_dim, data.image_dim
    if vdata is not None:   # a val table lacking a modality the head uses: treat it as missing
        vdata = vdata.with_modalities(text_dim, image_dim)
    counts = np.bincount(y, minlength=C)
    class_w = _losses.class_weights(counts, cfg.focal_alpha, cfg.focal_beta).to(device) \
        if cfg.focal_alpha != "none" else None
    method, why = choose_solver(cfg, data, checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks,
                                log_csv=log_csv, n_classes=C)
    cfg = cfg.resolve(len(y), len(yv) if vdata is not None else 0, solver=method)   # input_norm follows the solver
    if method == "lbfgs":
        return _train_full_batch(emb, data, y, (vdata, yv) if vdata is not None else None, taxonomy=taxonomy,
                                 neighbors=neighbors, nb_k=nb_k, cfg=cfg, device=device, codes=codes,
                                 class_w=class_w, progress=progress, why=why)
    fp = _fingerprint(y)
    efp = _emb_fingerprint(data, getattr(emb, "meta", None))
    if ck is not None:
        old = ck["config"]
        diff = [k for k, v in cfg.to_dict().items() if k not in _RESUME_FREE and old.get(k, v) != v]
        if diff:
            shown = ", ".join(f"{k}: checkpoint {old.get(k)!r} vs now {getattr(cfg, k)!r}" for k in diff)
            raise ValueError(f"cannot resume {ck['path']}: the config differs ({shown}); pass config=None to use "
                             "the checkpoint's config")
        if ck["train_fingerprint"] != fp:
            raise ValueError(f"cannot resume {ck['path']}: the training labels differ from the checkpointed run "
                             f"({ck['n_train']} rows then, {len(y)} now); resume with the same training data")
        if ck.get("emb_fingerprint") not in (None, efp):
            raise ValueError(f"cannot resume {ck['path']}: the training embeddings differ from the checkpointed run "
                             "(same labels, other vectors or encoders); resume with the same embeddings, or train "
                             "anew with overwrite=True")
    ckdir = Path(checkpoint_dir).expanduser() if checkpoint_dir is not None else None
    if ckdir is not None and not overwrite and (ckdir / "last.pt").exists():
        _refuse_reuse(ckdir, ck)
    fork_devices = [device.index or 0] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=fork_devices):   # leave the caller's global RNG untouched
        torch.manual_seed(cfg.seed)
        model = FusionHead(text_dim, image_dim, C, fusion=cfg.fusion, proj_dim=cfg.proj_dim, hidden=cfg.hidden,
                           dropout=cfg.dropout, modality_dropout=cfg.modality_dropout, input_norm=cfg.input_norm,
                           out_dim=codes.shape[1] if codes is not None else None).to(device)
        if codes is not None:
            _init_code_bias(model, codes, y)
        if ck is not None and {"input_norm": True, **ck["model_config"]} != model.config:   # older: always normed
            was = ck["model_config"].get("n_classes")
            blame = (f"the taxonomy has {C} classes, the checkpointed head {was}; resume with the run's taxonomy"
                     if was != C else "these embeddings need another head; resume with the run's embeddings")
            raise ValueError(f"cannot resume {ck['path']}: {blame} (checkpoint {ck['model_config']}, now "
                             f"{model.config})")
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = _adamw(model, cfg)
        steps_per_epoch = math.ceil(len(y) / cfg.batch_size)
        n_epochs = cfg.epochs_for(len(y))     # epochs, raised to reach min_steps on small catalogs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps_per_epoch * n_epochs, cfg.warmup))
        codes_t = torch.as_tensor(codes, device=device) if codes is not None else None

        if codes_t is not None:
            def loss_fn(z, yb, trainer):
                bce = _losses.code_bce_loss(z, yb, codes_t, check_labels=False)   # validated once, no syncs
                return {"total": bce, "bce": bce}
            curriculum = CurriculumTargets(None, None)
        else:
            def loss_fn(z, yb, trainer):
                parts = _losses.combined_loss(z, yb, trainer.targets, gamma=cfg.focal_gamma, alpha=class_w,
                                              kl_weight=cfg.kl_weight, check_labels=False)   # validated once
                if cfg.focal_weight != 1.0:
                    parts["total"] = cfg.focal_weight * parts["focal"] + cfg.kl_weight * parts["kl"]
                return parts
            params = _soft.config_params(cfg.smoothing, cfg)

            def build(alpha):
                return _soft.build(cfg.smoothing, C, alpha, neighbors=nb_k, taxonomy=taxonomy, alpha_by=cfg.alpha_by,
                                   **params)
            if cfg.smoothing == "onehot":
                curriculum = CurriculumTargets(lambda a: _soft.build("onehot", C, 0.0), lambda e: 0.0)
            else:
                curriculum = CurriculumTargets(build, _soft.schedule(cfg.curriculum, cfg.alpha, n_epochs,
                                                                     final=cfg.alpha_final, n_steps=cfg.curriculum_steps))
        cbs = [curriculum,
               DivergenceStop(cfg.check_every or (25 if device.type == "cuda" else 1), lr=cfg.lr),
               ProgressBar(progress)]
        if vdata is not None:
            from ..judge.streaming import StreamingEvaluator

            cbs.append(Validation(vdata, yv, StreamingEvaluator(taxonomy, neighbors=neighbors, from_logits=True,
                                                                device=device, check=False)))
            if cfg.early_stopping is not None:
                cbs.append(EarlyStopping(cfg.early_stopping, cfg.patience, cfg.minimize))
        if ckdir is not None:
            cbs.append(Checkpoint(ckdir, cfg.checkpoint_every, fmt=CHECKPOINT_FORMAT,
                                  extra=lambda: {"config": cfg.to_dict(), "train_fingerprint": fp,
                                                 "emb_fingerprint": efp, "n_train": len(y)}))
        if log_csv is not None:
            cbs.append(MetricLogger(log_csv))
        cbs.extend(callbacks)
        lazy = getattr(data, "lazy", False)
        trainer = Trainer(model, opt, sched, data.to(device) if device.type == "cuda" else data, y, loss_fn,
                          epochs=n_epochs, batch_size=cfg.batch_size, device=device, dtype=dtype, generator=gen,
                          callbacks=cbs, score=_code_scorer(codes_t), checkpoint_dir=ckdir,
                          chunk_size=cfg.shuffle_chunk if lazy else None)
        if ck is not None:
            trainer.restore(ck)
        trainer.fit()
    history = pd.DataFrame(trainer.history)      # alpha is 0 for one-hot / codes (CurriculumTargets)
    return TrainRun(model=model, config=cfg, history=_order_history(history), taxonomy=taxonomy, neighbors=neighbors,
                    encoder_meta=dict(getattr(emb, "meta", None) or {}), best_epoch=int(trainer.best_epoch),
                    codes=codes, checkpoint_dir=ckdir, solver={"method": "minibatch", "why": why, "budget": cfg.budget(len(y))})


#: ``solver="auto"`` fits heads up to this many output-layer parameters full-batch (L-BFGS keeps 2 x 10 copies
#: of them per stacked head, and its steps grow with them: 5,595 classes are trained in minibatches)
FULL_BATCH_MAX_PARAMS = 1_000_000


def choose_solver(cfg: TrainConfig, data, *, checkpoint_dir=None, resume=None, callbacks=(), log_csv=None,
                  distributed: bool | None = None, n_classes: int | None = None) -> tuple[str, str]:
    """``(method, why)``: how :func:`train` fits ``cfg`` on the training table ``data``.

    ``cfg.solver`` other than ``"auto"`` is kept (``"lbfgs"`` with a minibatch-only feature is an
    error). ``"auto"`` is ``"lbfgs"`` when the table is in memory (not memory-mapped from the store),
    one process trains it, its float32 features fit in :data:`semcat_kit.learn.solver.IN_MEMORY_BYTES`,
    the head is linear (``hidden=0, proj_dim=0``: a convex objective; the data-aware defaults' head),
    and neither checkpoints, resume, callbacks, a metrics CSV, a curriculum (hardening over epochs)
    nor a reduced precision (``bf16`` / ``fp16`` autocast) is asked for; otherwise ``"minibatch"``
    (an MLP head is non-convex: full-batch L-BFGS needs many steps there, ``solver="lbfgs"`` asks
    for it).
    """
    from .._core import distributed as _dist
    from .solver import IN_MEMORY_BYTES, memory_bytes

    width = (data.text_dim or 0) + (data.image_dim or 0)
    size = memory_bytes(len(data), width)
    extras = [name for name, v in (("checkpoint_dir", checkpoint_dir), ("resume", resume), ("log_csv", log_csv),
                                   ("callbacks", list(callbacks or ()))) if v]
    if cfg.curriculum != "constant":
        extras.append(f"curriculum={cfg.curriculum!r}")
    if cfg.precision in ("bf16", "fp16"):
        extras.append(f"precision={cfg.precision!r}")     # autocast: the full-batch fit runs in float32
    if distributed is None:
        distributed = _dist.is_distributed()
    if cfg.solver == "minibatch":
        return "minibatch", "solver='minibatch' in the config"
    if cfg.solver == "lbfgs":
        if extras:
            raise ValueError(f"solver='lbfgs' fits to convergence in one pass: {', '.join(extras)} belong to the "
                             "minibatch loop; use solver='minibatch' (or 'auto') for them")
        if getattr(data, "lazy", False) or distributed:
            raise ValueError("solver='lbfgs' needs the training table in memory in one process; memory-mapped "
                             "tables (the store) and torchrun use solver='minibatch' (or 'auto')")
        return "lbfgs", "solver='lbfgs' in the config"
    if getattr(data, "lazy", False):
        return "minibatch", f"the training table is memory-mapped ({len(data):,} rows): streamed in minibatches"
    if distributed:
        return "minibatch", "several processes (torchrun): each trains on its share in minibatches"
    if extras:
        return "minibatch", f"{', '.join(extras)} asked for: a feature of the minibatch loop"
    if not (cfg.hidden == 0 and cfg.proj_dim == 0 and cfg.fusion != "gated"):
        return "minibatch", ("an MLP head (hidden/proj_dim > 0): non-convex, trained in minibatches; "
                             "solver='lbfgs' fits it full-batch")
    n_params = None if n_classes is None else int(n_classes) * (width + 3)
    if n_params is not None and n_params > FULL_BATCH_MAX_PARAMS:
        return "minibatch", (f"{n_classes:,} classes x {width + 3:,} inputs = {n_params:,} head parameters > "
                             f"{FULL_BATCH_MAX_PARAMS:,}: minibatches")
    if size > IN_MEMORY_BYTES:
        return "minibatch", (f"{len(data):,} x {width} float32 features = {size / 2**30:.1f} GB > "
                             f"{IN_MEMORY_BYTES / 2**30:.0f} GB: minibatches")
    return "lbfgs", (f"in memory: {len(data):,} x {width} float32 features = {size / 2**20:,.0f} MB <= "
                     f"{IN_MEMORY_BYTES / 2**30:.0f} GB: fitted full-batch to convergence")


def loss_spec(cfg: TrainConfig, n_classes: int, *, taxonomy, neighbors=None, class_w=None, codes=None):
    """The :class:`semcat_kit.learn.losses.LossSpec` of a full-batch fit of ``cfg``: its soft targets
    at ``alpha`` (a curriculum ends at ``alpha_final``: the objective a full-batch fit would
    converge to), its focal/KL weights normalised to sum to 1, or the codes BCE."""
    if codes is not None:
        return _losses.LossSpec(codes=torch.as_tensor(codes, dtype=torch.float32), focal_weight=1.0, kl_weight=0.0)
    alpha = cfg.alpha if cfg.curriculum == "constant" else cfg.alpha_final
    if cfg.smoothing == "onehot" or cfg.kl_weight == 0:
        targets = _soft.build("onehot", n_classes, 0.0)
    else:
        targets = _soft.build(cfg.smoothing, n_classes, alpha, neighbors=_truncate(neighbors, cfg.k),
                              taxonomy=taxonomy, alpha_by=cfg.alpha_by, **_soft.config_params(cfg.smoothing, cfg))
    total = cfg.focal_weight + cfg.kl_weight
    return _losses.LossSpec(targets=targets, focal_weight=cfg.focal_weight / total, kl_weight=cfg.kl_weight / total,
                            gamma=cfg.focal_gamma, class_weight=class_w)


def _holdout(y: np.ndarray, seed: int, share: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, selection rows): a stratified ``share`` of every class with >= 2 items held out."""
    rng = np.random.default_rng(seed)
    pick = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) >= 2:
            pick[rng.choice(rows, size=max(1, int(round(share * len(rows)))), replace=False)] = True
    return np.flatnonzero(~pick), np.flatnonzero(pick)


def _train_full_batch(emb, data, y, val, *, taxonomy, neighbors, nb_k, cfg, device, codes, class_w, progress,
                      why) -> TrainRun:
    """:func:`train` with ``solver="lbfgs"``: :func:`semcat_kit.learn.solver.fit_path` on one problem."""
    from .solver import StackedHeads

    C = taxonomy.n_classes
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)
        model = _head_for(cfg, data, C, codes, device)
    stack = StackedHeads.for_head(model)
    spec = loss_spec(cfg, C, taxonomy=taxonomy, neighbors=nb_k if nb_k is not None else neighbors,
                     class_w=class_w, codes=codes)
    runs = fit_full_batch(stack, [spec], data.to(device) if device.type == "cuda" else data, y, val, cfg=cfg,
                          x0=None if stack.linear else stack.flat(model)[None], progress=progress)
    x, hist, chosen = runs[0]
    stack.load(model, x)
    model.eval()
    history = pd.DataFrame(hist)
    last = history[history["C"] == chosen].iloc[-1]
    info = {"method": "lbfgs", "why": why, "C": chosen, "iterations": int(last["iterations"]),
            "converged": bool(last["converged"]), "threads": int(last["threads"])}
    return TrainRun(model=model, config=cfg, history=_order_history(history), taxonomy=taxonomy, neighbors=neighbors,
                    encoder_meta=dict(getattr(emb, "meta", None) or {}),
                    best_epoch=int(history.index[history["C"] == chosen][-1]) + 1, codes=codes, solver=info)


def _head_for(cfg: TrainConfig, data, C: int, codes, device) -> FusionHead:
    model = FusionHead(data.text_dim, data.image_dim, C, fusion=cfg.fusion, proj_dim=cfg.proj_dim, hidden=cfg.hidden,
                       dropout=cfg.dropout, modality_dropout=cfg.modality_dropout, input_norm=cfg.input_norm,
                       out_dim=codes.shape[1] if codes is not None else None).to(device)
    return model.eval()


def fit_full_batch(stack, specs, data, y, val, *, cfg: TrainConfig, x0=None, progress: bool = False,
                   desc: str = "fit", basis=True) -> list:
    """Fit the problems ``specs`` (one :class:`LossSpec` each, stacked) full-batch along ``cfg``'s C path.

    Returns, per problem, ``(x, history rows, chosen C)``. ``C="val"`` without validation data
    selects C on a stratified tenth of the training rows (:func:`_holdout`), then refits every
    problem on all rows at its C from the same start as the path (a warm start from the held-out
    fit can lie within the gradient tolerance already and not move; see :func:`fit_path`).
    ``basis``: the preconditioner of a linear stack (``fit_path``'s ``precondition``: a
    :class:`~semcat_kit.learn.solver.FeatureBasis` of ``data``'s features, or ``True`` / ``False``).
    """
    from .solver import fit_path

    C = stack.template.n_classes
    device = next(stack.template.parameters()).device
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    codes = specs[0].codes
    score = (lambda z: _soft.code_scores(z, codes.to(z.device))) if codes is not None else None
    if cfg.C != "val":
        loss = _losses.StackedLoss(specs, yt, C).to(device)
        r = fit_path(stack, loss, data, Cs=[float(cfg.C)], x0=x0, max_iter=cfg.max_iter, tol=cfg.tol,
                     progress=progress, desc=desc, precondition=basis)
        return [(r.x[k], _epochs(r.history[k]), r.C[k]) for k in range(len(specs))]
    if val is not None:
        loss = _losses.StackedLoss(specs, yt, C).to(device)
        r = fit_path(stack, loss, data, Cs=cfg.Cs, val=val, x0=x0, max_iter=cfg.max_iter, tol=cfg.tol,
                     progress=progress, desc=desc, score=score, precondition=basis)
        return [(r.x[k], _epochs(r.history[k]), r.C[k]) for k in range(len(specs))]
    fit_rows, sel_rows = _holdout(np.asarray(y), cfg.seed)
    if len(sel_rows) == 0:
        raise ValueError("C='val' without validation data needs classes with >= 2 training items to hold some out; "
                         "pass val=(emb, labels) or a number for TrainConfig.C")
    fit_tab, sel_tab = data.take(fit_rows), data.take(sel_rows)
    loss = _losses.StackedLoss(specs, yt[fit_rows], C).to(device)
    r = fit_path(stack, loss, fit_tab, Cs=cfg.Cs, val=(sel_tab, yt[sel_rows]), x0=x0, max_iter=cfg.max_iter,
                 tol=cfg.tol, progress=progress, desc=desc + " (C on a held-out tenth)", score=score)
    out = []
    full = _losses.StackedLoss(specs, yt, C).to(device)
    from .solver import fit_stacked

    l2 = [1.0 / (c * len(y)) for c in r.C]
    start = x0.clone() if x0 is not None else torch.zeros_like(r.x)
    from .._core.threads import torch_threads

    with torch_threads() as nthreads:            # the thread choice of fit_path (SEMCAT_THREADS / free cores)
        rf = fit_stacked(stack, full, l2, data, start, max_iter=cfg.max_iter, gtol=cfg.tol)
    for k in range(len(specs)):
        rows = _epochs(r.history[k])
        rows.append({"epoch": len(rows) + 1, "C": r.C[k], "l2": l2[k], "loss": float(rf.f[k]),
                     "iterations": int(rf.iterations[k]), "converged": bool(rf.converged[k]),
                     "grad_max": float(rf.grad_max[k]), "refit": True, "threads": nthreads})
        out.append((rf.x[k], rows, r.C[k]))
    return out


def _epochs(rows: list) -> list:
    return [{"epoch": i + 1, **r} for i, r in enumerate(rows)]


def stack_key(cfg: TrainConfig) -> tuple:
    """Configurations with equal keys share one head architecture and C path: :func:`train_stacked`
    fits them as one stacked problem."""
    return (cfg.fusion, cfg.proj_dim, cfg.hidden, cfg.input_norm, cfg.dropout, cfg.modality_dropout, cfg.label_repr,
            cfg.device, cfg.C, cfg.Cs, cfg.max_iter, cfg.tol)


def seed_free(cfg: TrainConfig, has_val: bool) -> bool:
    """Whether a full-batch fit of ``cfg`` does not depend on ``cfg.seed``: a linear head starts at
    zero and its objective is convex, so every seed gives the same head (unless C is chosen on a
    seeded hold-out, without validation data)."""
    return cfg.hidden == 0 and cfg.proj_dim == 0 and cfg.fusion != "gated" and (has_val or cfg.C != "val")


def train_stacked(emb, labels, configs, *, taxonomy, neighbors=None, val=None, progress: bool = True,
                  allow_unseen_val_classes: bool = False) -> list:
    """Train several configurations full-batch (``solver="lbfgs"``) in as few stacked passes as the
    shapes allow; returns one :class:`TrainRun` per configuration, in order.

    Configurations with the same :func:`stack_key` (head architecture, C path) are one problem of
    ``K`` stacked heads (:mod:`semcat_kit.learn.solver`): one GEMM per step for all of them, each
    with its own soft targets, loss, L-BFGS memory and line search, so every run is the run
    :func:`train` gives for its configuration alone (up to floating-point summation order). The
    inputs are checked once, and stacks of linear heads on the same fused features share one
    :class:`~semcat_kit.learn.solver.FeatureBasis` (the solver's preconditioner, an eigendecomposition
    of the features' covariance). ``train_seconds`` of a run (``run.solver["seconds"]``) is its share
    of its stack's time.
    """
    import time

    from .solver import FeatureBasis, StackedHeads

    configs = list(configs)
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"configs[{i}] must be a TrainConfig, not {type(cfg).__name__}")
    C = taxonomy.n_classes
    data, y, vdata, yv = _training_inputs(emb, labels, val, taxonomy=taxonomy, neighbors=neighbors,
                                          allow_unseen_val_classes=allow_unseen_val_classes)
    if vdata is not None:
        vdata = vdata.with_modalities(data.text_dim, data.image_dim)
    configs = [cfg.resolve(len(y), len(yv) if vdata is not None else 0, solver="lbfgs") for cfg in configs]
    counts = np.bincount(y, minlength=C)
    groups: dict = {}
    for i, cfg in enumerate(configs):
        if _soft.kind_info(cfg.smoothing).needs_neighbors and neighbors is None:
            raise ValueError(f"smoothing={cfg.smoothing!r} needs neighbors=... (sk.similarity.label_neighbors of the "
                             "class-name embeddings); or use smoothing='tree', 'uniform' or 'onehot'")
        method, why = choose_solver(cfg.replace(solver="lbfgs") if cfg.solver == "auto" else cfg, data)
        if method != "lbfgs":
            raise ValueError(f"configs[{i}] has solver={cfg.solver!r}; train_stacked fits full-batch only")
        groups.setdefault(stack_key(cfg), []).append(i)
    runs: list = [None] * len(configs)
    _, why_auto = choose_solver(TrainConfig(), data, n_classes=C)
    bases: dict = {}            # linear stacks on the same fused features share one FeatureBasis
    for members in groups.values():
        cfg0 = configs[members[0]]
        device = resolve_device(cfg0.device, name="TrainConfig.device")
        codes = _soft.taxonomy_codes(taxonomy) if cfg0.label_repr == "codes" else None
        heads = []
        for i in members:
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                torch.manual_seed(configs[i].seed)
                heads.append(_head_for(configs[i], data, C, codes, device))
        stack = StackedHeads.for_head(heads[0])
        specs = []
        for i in members:
            cfg = configs[i]
            class_w = (_losses.class_weights(counts, cfg.focal_alpha, cfg.focal_beta).to(device)
                       if cfg.focal_alpha != "none" else None)
            specs.append(loss_spec(cfg, C, taxonomy=taxonomy, neighbors=neighbors, class_w=class_w, codes=codes))
        x0 = None if stack.linear else torch.stack([stack.flat(h) for h in heads])
        t0 = time.perf_counter()
        fit_data = data.to(device) if device.type == "cuda" else data
        basis = True
        if stack.linear and (cfg0.C != "val" or vdata is not None):
            # a linear head's fused features have no trained parameter: fusion and input_norm fix them
            key = (cfg0.fusion, cfg0.input_norm, str(device))
            if key not in bases:
                bases[key] = FeatureBasis.of(stack.features(fit_data))
            basis = bases[key]
        fitted = fit_full_batch(stack, specs, fit_data, y, (vdata, yv) if vdata is not None else None, cfg=cfg0, x0=x0,
                                progress=progress, desc=f"fit {len(members)} stacked head(s)", basis=basis)
        share = (time.perf_counter() - t0) / len(members)
        for i, head, (x, hist, chosen) in zip(members, heads, fitted):
            stack.load(head, x)
            history = pd.DataFrame(hist)
            last = history[history["C"] == chosen].iloc[-1]
            info = {"method": "lbfgs", "why": why_auto if configs[i].solver == "auto" else "solver='lbfgs' in the config",
                    "C": chosen, "iterations": int(last["iterations"]), "converged": bool(last["converged"]),
                    "stacked_with": len(members), "seconds": share, "threads": int(last["threads"])}
            runs[i] = TrainRun(model=head, config=configs[i], history=_order_history(history), taxonomy=taxonomy,
                               neighbors=neighbors, encoder_meta=dict(getattr(emb, "meta", None) or {}),
                               best_epoch=int(history.index[history["C"] == chosen][-1]) + 1, codes=codes, solver=info)
    return runs


def _order_history(h: pd.DataFrame) -> pd.DataFrame:
    """Columns as before the trainer: epoch, alpha, lr, loss, loss parts, seconds, val_*."""
    first = [c for c in ("epoch", "alpha", "lr", "loss", "focal", "kl", "bce", "seconds") if c in h.columns]
    return h[first + [c for c in h.columns if c not in first]]


def _refuse_reuse(ckdir: Path, ck: dict | None = None) -> None:
    """Refuse a ``checkpoint_dir`` that holds another run's ``last.pt`` (it would be replaced).

    With ``ck`` (the checkpoint resumed), ``ckdir`` may hold that very file, or the same run (same
    config, labels and embeddings) at an epoch not beyond the one resumed; anything else is another
    run's work and is refused as without ``resume``."""
    old = None
    try:
        old = load_checkpoint(ckdir)
        what = (f"a run at epoch {old['epoch']} of {old['config'].get('epochs')} (config: "
                f"{TrainConfig.from_dict(old['config'])!r})")
    except Exception as e:   # an unreadable file is still somebody's work
        what = f"a checkpoint that cannot be read ({type(e).__name__})"
    if ck is not None:
        if Path(ck["path"]).resolve() == (ckdir / "last.pt").resolve():
            return
        same = old is not None and all(old.get(k) == ck.get(k) for k in ("config", "train_fingerprint",
                                                                            "emb_fingerprint"))
        if same and old.get("epoch", 0) <= ck.get("epoch", 0):
            return
        later = " (the same run, further on)" if same else ""
        raise ValueError(f"checkpoint_dir {ckdir} already holds {what}{later}; resuming {ck['path']} there would "
                         f"replace it. Give another checkpoint_dir, resume={str(ckdir)!r} to continue that run, or "
                         "overwrite=True to replace it")
    raise ValueError(f"checkpoint_dir {ckdir} already holds {what}; pass resume={str(ckdir)!r} to continue it, "
                     "overwrite=True to replace it, or another checkpoint_dir")
