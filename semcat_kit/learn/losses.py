"""Losses: focal loss with per-class weights, KL to sparse soft targets, the combined objective,
and the BCE loss of binary taxonomy codes.

All losses compute in float32 internally (bf16/fp16 logits are upcast), so they are stable under
extreme logits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..labels.soft_labels import SoftTargets

__all__ = ["class_weights", "focal_loss", "soft_kl", "combined_loss", "code_bce_loss", "WEIGHT_MODES", "LossSpec",
           "StackedLoss"]

WEIGHT_MODES = ("none", "inverse", "effective")
_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check(logits: torch.Tensor, y: torch.Tensor, reduction: str, n_classes: int | None = None,
           check_labels: bool = True):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, not {reduction!r}")
    if not torch.is_tensor(logits) or logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D tensor (batch, n_classes); got "
                         f"{tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__}")
    y = torch.as_tensor(y, device=logits.device)
    if y.ndim != 1 or y.shape[0] != logits.shape[0]:
        raise ValueError(f"y must be 1-D with one class index per logits row ({logits.shape[0]}); "
                         f"got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, not {y.dtype}")
    C = logits.shape[1]
    if n_classes is not None and C != n_classes:
        raise ValueError(f"logits have {C} columns but the soft targets cover {n_classes} classes")
    if check_labels and y.numel() and (int(y.min()) < 0 or int(y.max()) >= C):   # host syncs
        bad = int(torch.nonzero((y < 0) | (y >= C))[0, 0])
        raise ValueError(f"y[{bad}] = {int(y[bad])} is not a class index in [0, {C})")
    return y.long()


def class_weights(counts, mode: str = "none", beta: float = 0.999) -> torch.Tensor:
    """Per-class weights for the focal/CE loss, normalised to mean 1 over classes.

    * ``"none"``: ``w_c = 1``
    * ``"inverse"``: ``w_c ∝ 1 / max(n_c, 1)``
    * ``"effective"``: ``w_c ∝ (1 - beta) / (1 - beta ** max(n_c, 1))`` (class-balanced loss,
      Cui et al. 2019, "effective number of samples")

    Zero-count classes are treated as having one sample (finite weight).

    Parameters
    ----------
    counts : array-like (C,)
        Training examples per class (non-negative).
    mode : {"none", "inverse", "effective"}
    beta : float in [0, 1)
        Only for ``"effective"``.

    Returns
    -------
    torch.Tensor
        (C,) float32 with mean 1.
    """
    if mode not in WEIGHT_MODES:
        raise ValueError(f"class weight mode must be one of {WEIGHT_MODES}, not {mode!r}")
    n = np.asarray(counts.detach().cpu().numpy() if torch.is_tensor(counts) else counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array (one count per class); got shape {n.shape}")
    if not np.isfinite(n).all() or (n < 0).any():
        bad = int(np.argmax(~np.isfinite(n) | (n < 0)))
        raise ValueError(f"counts[{bad}] = {n[bad]} is not a non-negative count")
    n = np.maximum(n, 1.0)
    if mode == "none":
        w = np.ones_like(n)
    elif mode == "inverse":
        w = 1.0 / n
    else:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1) for effective-number weights, not {beta}")
        # (1 - beta) / (1 - beta**n), with -expm1(n log beta) = 1 - beta**n computed accurately
        w = (1.0 - beta) / -np.expm1(n * math.log(beta)) if beta > 0 else np.ones_like(n)
    w = w / w.mean()
    return torch.tensor(w, dtype=torch.float32)


def focal_loss(logits, y, gamma: float = 2.0, alpha=None, reduction: str = "mean",
               check_labels: bool = True) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) with optional per-class weights.

    ``FL_i = -alpha[y_i] * (1 - p_{y_i}) ** gamma * log p_{y_i}``, ``p = softmax(logits)``.
    ``gamma = 0`` and ``alpha = None`` is the cross-entropy. ``"mean"`` is the plain mean over
    the batch (not normalised by the sum of alpha).

    Parameters
    ----------
    logits : (B, C) tensor
    y : (B,) int64 class indices
    gamma : float >= 0
    alpha : None, float, or (C,) tensor/array (e.g. :func:`class_weights`)
    reduction : {"mean", "sum", "none"}
    check_labels : bool
        Check that every label is a class index (two host syncs on an accelerator). ``False`` for
        labels validated once up front, as the trainer's.
    """
    y = _check(logits, y, reduction, check_labels=check_labels)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, not {gamma}")
    return _reduce(_focal(F.log_softmax(logits.float(), dim=1), y, gamma, alpha), reduction)


def _focal(logp_all: torch.Tensor, y: torch.Tensor, gamma: float, alpha) -> torch.Tensor:
    """Per-row focal loss from the (B, C) log-probabilities (see :func:`focal_loss`)."""
    logp = logp_all.gather(1, y[:, None]).squeeze(1)
    loss = -logp
    if gamma != 0:
        # 1 - p computed as -expm1(log p): accurate when p is close to 1
        loss = loss * (-torch.expm1(logp)).clamp_min(0).pow(gamma)
    if alpha is not None:
        if isinstance(alpha, (int, float)):
            loss = loss * float(alpha)
        else:
            a = torch.as_tensor(alpha, device=loss.device, dtype=torch.float32)
            if a.ndim != 1 or a.shape[0] != logp_all.shape[1]:
                raise ValueError(f"alpha must hold one weight per class ({logp_all.shape[1]}); "
                                 f"got shape {tuple(a.shape)}")
            loss = loss * a[y]
    return loss


def soft_kl(logits, y, targets: SoftTargets, reduction: str = "mean", check_labels: bool = True) -> torch.Tensor:
    """KL divergence from the sparse soft target of each example's class to the prediction.

    ``KL_i = sum_j t(j) log t(j) - sum_j t(j) log p(j)`` with ``t`` the target of class ``y_i``
    and ``p = softmax(logits_i)``. With ``t(j) = w_j [j in S] + f / C``:

    ``sum_j t(j) log p(j) = sum_{j in S} w_j log p(j) + (f / C) sum_j log p(j)``,

    so only the ``K`` listed log-probabilities are gathered (plus the O(C) ``log_softmax`` and,
    when ``f > 0``, the O(C) sum of log-probabilities); ``sum_j t log t`` is precomputed per class
    (:meth:`SoftTargets.neg_entropy`); no (B, C) target is ever built.

    Parameters
    ----------
    logits : (B, C) tensor (any float dtype; computed in float32)
    y : (B,) int64 class indices
    targets : SoftTargets
    reduction : {"mean", "sum", "none"}
    check_labels : bool
        As in :func:`focal_loss`.
    """
    if not isinstance(targets, SoftTargets):
        raise TypeError(f"targets must be a soft_labels.SoftTargets, not {type(targets).__name__}")
    y = _check(logits, y, reduction, targets.n_classes, check_labels=check_labels)
    # one fused O(C) log_softmax (its backward is much cheaper than logsumexp's), then K gathers
    return _reduce(_kl(F.log_softmax(logits.float(), dim=1), y, targets), reduction)


def _kl(logp: torch.Tensor, y: torch.Tensor, targets: SoftTargets) -> torch.Tensor:
    """Per-row KL from the (B, C) log-probabilities (see :func:`soft_kl`)."""
    C = logp.shape[1]
    idx_t, w_t, h_t = targets.torch_tables(logp.device)
    idx, w = idx_t[y], w_t[y]                       # (B, K)
    cross = (w * logp.gather(1, idx)).sum(1)
    if targets.floor > 0:
        cross = cross + (targets.floor / C) * logp.sum(1)
    return h_t[y].float() - cross


def combined_loss(logits, y, targets: SoftTargets | None = None, gamma: float = 2.0, alpha=None,
                  kl_weight: float = 1.0, check_labels: bool = True) -> dict[str, torch.Tensor]:
    """``total = focal_loss(logits, y, gamma, alpha) + kl_weight * soft_kl(logits, y, targets)``.

    Returns a dict ``total, focal, kl`` (batch means; ``kl`` is 0 when ``targets`` is None or
    ``kl_weight == 0``) so the parts can be logged separately. ``check_labels`` as in
    :func:`focal_loss`.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, not {gamma}")
    use_kl = targets is not None and kl_weight != 0
    if use_kl and not isinstance(targets, SoftTargets):
        raise TypeError(f"targets must be a soft_labels.SoftTargets, not {type(targets).__name__}")
    y = _check(logits, y, "mean", targets.n_classes if use_kl else None, check_labels=check_labels)
    logp = F.log_softmax(logits.float(), dim=1)        # once, for both terms
    focal = _focal(logp, y, gamma, alpha).mean()
    kl = _kl(logp, y, targets).mean() if use_kl else torch.zeros((), device=focal.device)
    return {"total": focal + kl_weight * kl, "focal": focal, "kl": kl}


def code_bce_loss(logits, y, codes, reduction: str = "mean", check_labels: bool = True) -> torch.Tensor:
    """Binary cross-entropy of per-bit logits against the taxonomy code of each example's class.

    ``L_i = -sum_b [c_b log sigmoid(x_b) + (1 - c_b) log sigmoid(-x_b)]`` with ``c = codes[y_i]``
    (:func:`semcat_kit.labels.soft_labels.taxonomy_codes`); ``L_i = -code_scores(x_i)[y_i]``. ``"mean"``
    averages over the batch (bits are summed). ``check_labels`` as in :func:`focal_loss`.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, not {reduction!r}")
    x = logits.float()
    cd = torch.as_tensor(codes, device=x.device, dtype=torch.float32)
    if x.ndim != 2 or cd.ndim != 2 or x.shape[1] != cd.shape[1]:
        raise ValueError(f"bit logits (N, B) and codes (C, B) must agree on B; got {tuple(x.shape)} "
                         f"and {tuple(cd.shape)}")
    y = torch.as_tensor(y, device=x.device)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be 1-D with one class index per row ({x.shape[0]}); got {tuple(y.shape)}")
    if check_labels and y.numel() and (int(y.min()) < 0 or int(y.max()) >= cd.shape[0]):
        bad = int(torch.nonzero((y < 0) | (y >= cd.shape[0]))[0, 0])
        raise ValueError(f"y[{bad}] = {int(y[bad])} is not a class index in [0, {cd.shape[0]})")
    target = cd[y.long()]
    loss = F.binary_cross_entropy_with_logits(x, target, reduction="none").sum(1)
    return _reduce(loss, reduction)


# ------------------------------------------------------------------------- stacked problems
@dataclass
class LossSpec:
    """One training objective of a stack (:class:`StackedLoss`).

    ``focal_weight * focal_loss(z, y; gamma, class_weight) + kl_weight * soft_kl(z, y, targets)``,
    or, with ``codes`` ((C, B) taxonomy codes), :func:`code_bce_loss`.
    """

    targets: SoftTargets | None = None
    focal_weight: float = 1.0
    kl_weight: float = 1.0
    gamma: float = 0.0
    class_weight: torch.Tensor | None = None
    codes: torch.Tensor | None = None


class StackedLoss:
    """Per-item losses of K objectives (:class:`LossSpec`) on stacked logits ``z`` of shape (n, K, C).

    With ``gamma = 0`` for every spec (cross-entropy plus KL, the full-batch default) the K
    objectives are evaluated together: for each problem ``k`` and item ``i`` of class ``y``,

        L_ik = focal_weight_k * a_k[y] * (-log p_iky)
               + kl_weight_k * (sum_j t_ky(j) log t_ky(j) - sum_{j in S_ky} w_kyj log p_ikj - f_k / C sum_c log p_ikc)

    with one ``log_softmax`` over the stack and one gather of the ``1 + K_t`` target entries of
    every item, tabled once per (item, problem) from the per-class soft targets (never per step).
    Other specs (``gamma > 0``, codes) are evaluated one problem at a time with
    :func:`combined_loss` / :func:`code_bce_loss`.

    Parameters
    ----------
    specs : sequence of LossSpec
    y : (N,) class indices of the training rows
    n_classes : int
    """

    def __init__(self, specs, y, n_classes: int):
        self.specs = list(specs)
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.C = int(n_classes)
        self.fast = all(s.codes is None and s.gamma == 0 for s in self.specs)
        if self.fast:
            self._tables()

    @property
    def k(self) -> int:
        return len(self.specs)

    def _tables(self) -> None:
        C, y = self.C, self.y
        cols, ws, consts, floors = [], [], [], []
        width = 1 + max((s.targets.k if s.targets is not None and s.kl_weight > 0 else 0) for s in self.specs)
        for s in self.specs:
            a = (torch.as_tensor(s.class_weight, dtype=torch.float32) if s.class_weight is not None
                 else torch.ones(C))
            idx = torch.zeros(C, width, dtype=torch.long)
            w = torch.zeros(C, width)
            idx[:, 0] = torch.arange(C)
            w[:, 0] = float(s.focal_weight) * a
            const = torch.zeros(C, dtype=torch.float64)
            floor = 0.0
            if s.targets is not None and s.kl_weight > 0:
                ti, tw, th = s.targets.torch_tables()
                idx[:, 1:1 + ti.shape[1]] = ti
                w[:, 1:1 + tw.shape[1]] = float(s.kl_weight) * tw
                const = float(s.kl_weight) * th
                floor = float(s.kl_weight) * s.targets.floor
            cols.append(idx[y])
            ws.append(w[y])
            consts.append(const[y].float())
            floors.append(floor)
        self.idx = torch.stack(cols, 1)           # (N, K, M)
        self.w = torch.stack(ws, 1)               # (N, K, M)
        self.const = torch.stack(consts, 1)       # (N, K)
        self.floor = torch.tensor(floors)         # (K,)

    def output_variance(self) -> torch.Tensor:
        """``(out,)`` variance of each output's target under the intercept-only model: ``pi_c (1 - pi_c)``
        for class ``c`` of training frequency ``pi_c`` (``q_b (1 - q_b)`` for bit ``b`` of taxonomy codes,
        ``q_b`` its mean over the training items), at least ``1 / N``. The curvature of the loss per
        unit of feature variance there (the diagonal of the softmax / sigmoid Hessian): the
        preconditioner of :class:`semcat_kit.learn.solver.FeatureBasis`."""
        n = max(1, int(self.y.numel()))
        codes = self.specs[0].codes if self.specs else None
        if codes is not None:
            q = torch.as_tensor(codes, dtype=torch.float64, device=self.y.device)[self.y].mean(0)
        else:
            q = torch.bincount(self.y, minlength=self.C).double() / n
        return (q * (1 - q)).clamp_min(1.0 / n)

    def to(self, device) -> "StackedLoss":
        self.y = self.y.to(device)
        if self.fast:
            self.idx, self.w, self.const, self.floor = (t.to(device) for t in (self.idx, self.w, self.const,
                                                                                self.floor))
        for s in self.specs:
            if s.class_weight is not None:
                s.class_weight = torch.as_tensor(s.class_weight).to(device)
            if s.codes is not None:
                s.codes = torch.as_tensor(s.codes).to(device)
        return self

    def __call__(self, z: torch.Tensor, rows: slice, problems: torch.Tensor) -> torch.Tensor:
        """(n, k) losses of the rows ``rows`` for the problems ``problems`` (k indices) from ``z`` (n, k, C)."""
        if self.fast:
            logp = F.log_softmax(z.float(), dim=2)
            idx, w = self.idx[rows][:, problems], self.w[rows][:, problems]
            cross = (w * logp.gather(2, idx)).sum(2)
            out = self.const[rows][:, problems] - cross
            fl = self.floor[problems]
            if bool((fl > 0).any()):
                out = out - (fl / self.C) * logp.sum(2)
            return out
        yb = self.y[rows]
        parts = []
        for c, j in enumerate(problems.tolist()):
            s = self.specs[j]
            if s.codes is not None:
                parts.append(code_bce_loss(z[:, c], yb, s.codes, reduction="none", check_labels=False))
                continue
            loss = s.focal_weight * focal_loss(z[:, c], yb, s.gamma, s.class_weight, reduction="none",
                                               check_labels=False)
            if s.targets is not None and s.kl_weight > 0:
                loss = loss + s.kl_weight * soft_kl(z[:, c], yb, s.targets, reduction="none", check_labels=False)
            parts.append(loss)
        return torch.stack(parts, 1)
