"""Streaming evaluation: the metrics of :func:`semcat_kit.judge.metrics.evaluate` from chunks of scores.

``evaluate`` needs the whole (N, C) probability matrix; at a million products and thousands of
classes that matrix does not fit. :class:`StreamingEvaluator` takes it chunk by chunk
(``update(probs_chunk, y_chunk)``), keeps only counts whose size does not grow with N -- O(C)
per-class counts, O(k) hit counts, O(bins) calibration sums -- and ``compute()`` returns the same
:class:`pandas.Series` as ``evaluate`` on the concatenated input (same keys, same order, values
equal up to float summation order, ~1e-12).

Torch tensors are evaluated on their device (CUDA during training): the ranking, the tree
distances (from the (C, depth) ancestor table), the per-class counts and the calibration bins are
device tensors; nothing is copied to the host until ``compute()`` (a validity check and the
ranking's tie check read one small value per chunk). NumPy arrays are evaluated on the CPU the same way.

Every count that can be an integer is one (hits, distances, true positives), so the result does
not depend on how the input was cut into chunks. The ranking is :func:`semcat_kit.judge.decoding.topk`'s
(equal scores: lower class index first) or CRM (:func:`semcat_kit.judge.decoding.crm_predict`, computed
per chunk on the CPU).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .._core.memory import bound_heap, release_freed_memory
from .._core.contracts import SUM_TOL, as_k, as_labels, as_neighbor_indices, as_probs
from .decoding import crm_predict
from .metrics import ECE_BINS, metric_names

__all__ = ["StreamingEvaluator", "topk_torch"]


def topk_torch(scores: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`semcat_kit.judge.decoding.topk` on a tensor, on its device: indices of the ``k`` highest
    scores of each row, best first, equal scores ordered by lower class index.

    ``torch.topk`` leaves the order of ties unspecified; the k winners are re-ordered by
    (score descending, index ascending), and rows where a tie straddles the k-th place (the
    (k+1)-th score equals the k-th) are ranked by a full stable sort.
    """
    n, C = scores.shape
    k = min(int(k), C)
    if n == 0:
        return torch.empty((0, k), dtype=torch.int64, device=scores.device)
    # one more than k: a tie straddles the k-th place iff the (k+1)-th score equals the k-th
    extra = 1 if k < C else 0
    vals, idx = torch.topk(scores, k + extra, dim=1, sorted=True)
    straddle = (vals[:, k - 1] == vals[:, k]) if extra else torch.zeros(n, dtype=torch.bool, device=scores.device)
    vals, idx = vals[:, :k], idx[:, :k]
    # ties inside the top-k: sort by index, then stably by value (descending)
    o = torch.argsort(idx, dim=1)
    idx, vals = idx.gather(1, o), vals.gather(1, o)
    o = torch.sort(vals, dim=1, descending=True, stable=True).indices
    idx = idx.gather(1, o)
    rows = straddle.nonzero().squeeze(1)
    if rows.numel():                         # rare: which of the tied scores get in matters
        full = torch.sort(scores[rows], dim=1, descending=True, stable=True).indices[:, :k]
        idx[rows] = full
    return idx


class StreamingEvaluator:
    """Metrics of :func:`semcat_kit.judge.metrics.evaluate`, accumulated over chunks of probabilities.

    ``update`` each chunk, then ``compute``; equal to ``evaluate(concatenated probs, y, ...)``.
    Memory: O(C) per-class counts plus the chunk being added, never (N, C).

    Parameters
    ----------
    taxonomy : Taxonomy
    neighbors : Neighbors or array (C, k), optional
        Semantic neighbours (``-1`` padding); adds ``nbrs@{k}``.
    ks : sequence of int
        The k of ``top{k}``, ``hdist@{k}``, ``nbrs@{k}`` (as in ``evaluate``).
    crm : bool
        Rank by CRM (minimum expected tree distance) instead of probability; computed per chunk on
        the CPU. ``ece`` stays that of the probabilities' argmax, as in ``evaluate``.
    top_m : int, optional
        CRM candidate count (see :func:`semcat_kit.judge.decoding.crm_rerank`).
    from_logits : bool
        Chunks are logits: a softmax over classes (in the chunk's dtype) makes the probabilities.
    device : str or torch.device, optional
        Where the counts live; by default the device of the first tensor chunk (CPU for NumPy).
    check : bool
        Validate each tensor chunk (probabilities finite, >= 0, rows summing to 1; labels in
        range): one host sync per chunk. ``False``: no validation syncs (for a training loop whose
        outputs are softmax probabilities of valid labels); the ranking's tie check still reads
        one small count per chunk.

    Attributes
    ----------
    n : int
        Samples seen so far.

    Examples
    --------
    >>> ev = StreamingEvaluator(tax, neighbors=nbrs)              # doctest: +SKIP
    >>> for xb, yb in val_loader:                                 # doctest: +SKIP
    ...     ev.update(torch.softmax(model(xb), 1), yb)
    >>> ev.compute()                                              # doctest: +SKIP
    """

    def __init__(self, taxonomy, neighbors=None, ks: Sequence[int] = (1, 5, 20), crm: bool = False,
                 top_m: int | None = None, from_logits: bool = False, device=None, check: bool = True):
        self.taxonomy = taxonomy
        C = self.n_classes = taxonomy.n_classes
        self.ks = [as_k(k, "each of ks") for k in ks]
        self.nb = as_neighbor_indices(neighbors, C) if neighbors is not None else None
        if top_m is not None:
            as_k(top_m, "top_m")
        self.crm, self.top_m, self.from_logits, self.check = bool(crm), top_m, bool(from_logits), bool(check)
        self.kmax = min(max([5, *self.ks]), C)
        self.n_levels = int(taxonomy.max_depth)
        self._device = None if device is None else torch.device(device)
        self._tables = None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every chunk (the tree tables stay)."""
        self.n = 0
        self._state = None
        self._narrow_warning = None

    def _init(self, device: torch.device) -> None:
        if self._device is None:
            self._device = device
        dev = self._device
        if self._tables is None or self._tables["anc"].device != dev:
            tax = self.taxonomy
            C = self.n_classes
            anc = torch.as_tensor(tax.ancestor_matrix()[:, 1:].astype(np.int64), device=dev)    # (C, L), -1 pad
            depth = torch.as_tensor(np.asarray(tax.depth(np.arange(C)), dtype=np.int64), device=dev)
            levels = np.stack([np.asarray(tax.level_index(np.arange(C), lv), dtype=np.int64)
                               for lv in range(1, self.n_levels + 1)], axis=1)
            self._tables = {"anc": anc, "depth": depth, "levels": torch.as_tensor(levels, device=dev),
                            "nb": None if self.nb is None else torch.as_tensor(self.nb, device=dev)}
        if self._state is None:
            C, z = self.n_classes, lambda *s: torch.zeros(*s, dtype=torch.int64, device=dev)
            self._state = {
                "hits": z(self.kmax),               # samples whose y is at rank r (0-based)
                "tp": z(C), "support": z(C), "n_pred": z(C),
                "level_ok": z(self.n_levels),
                "sev_sum": z(()), "n_wrong": z(()),
                "dist_cum": z(self.kmax),           # sum_n d(ranked_{n,r}, y_n) per rank r
                "nbr_hits": z(len(self.ks)),        # sum_n |top-k ∩ S_k(y)| per k of ks
                "inter": z(()), "depth_pred": z(()), "depth_true": z(()),
                "ece_count": z(ECE_BINS),
                "ece_conf": torch.zeros(ECE_BINS, dtype=self._float64(), device=dev),
                "ece_correct": z(ECE_BINS),
            }

    def _float64(self):
        return torch.float32 if self._device.type == "mps" else torch.float64

    # ------------------------------------------------------------------ update
    def _as_tensor(self, probs, first_row: int) -> torch.Tensor:
        """A validated (n, C) probability tensor on the evaluator's device."""
        C = self.n_classes
        where = f"probs rows {first_row}..{first_row + (len(probs) if hasattr(probs, '__len__') else 0) - 1}"
        if not isinstance(probs, torch.Tensor):
            p = np.asarray(probs)
            if self.from_logits:
                if p.ndim != 2 or not np.issubdtype(p.dtype, np.floating):
                    raise ValueError(f"{where}: logits must be a 2-D float array, got shape {p.shape}, "
                                     f"dtype {p.dtype}")
                p = torch.softmax(torch.from_numpy(np.ascontiguousarray(p)), dim=1).numpy()
            try:
                p = as_probs(p, C, allow_empty=True)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            self._init(torch.device("cpu") if self._device is None else self._device)
            return torch.from_numpy(np.ascontiguousarray(p)).to(self._device)
        t = probs.detach()
        if not t.is_floating_point():                   # ints, bools: the array rules (and messages)
            return self._as_tensor(t.cpu().numpy(), first_row)
        self._init(t.device)
        if t.ndim != 2 or t.shape[1] != C:              # the same message as for arrays, without copying
            try:
                as_probs(np.broadcast_to(np.float64(1.0 / max(C, 1)), tuple(t.shape)), C, allow_empty=True)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        t = t.to(self._device)
        if self.from_logits:
            t = torch.softmax(t, dim=1)
        if len(t) and self.check:
            # two row reductions, no (n, C) temporaries: a NaN/inf anywhere makes the sum non-finite
            # (and the minimum NaN), a negative value makes the minimum negative
            s = t.sum(dim=1, dtype=torch.float64 if self._device.type != "mps" else torch.float32)
            low = t.amin(dim=1)
            bad = ~torch.isfinite(s) | ~(low >= 0) | ((s - 1).abs() > SUM_TOL)
            if bool(bad.any()):                         # one host sync per chunk (check=False: none)
                try:                                     # the same message evaluate gives, rows offset
                    as_probs(t.float().cpu().numpy(), C)
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
        return t

    def _labels(self, y, n: int, first: int) -> np.ndarray:
        try:
            return as_labels(y, n, self.taxonomy)
        except ValueError as e:
            raise ValueError(f"y rows {first}..{first + n - 1}: {e}") from None

    def update(self, probs, y) -> None:
        """Add a chunk.

        Parameters
        ----------
        probs : array or tensor (n, C)
            Probabilities (logits with ``from_logits=True``); column c is ``taxonomy.classes[c]``.
        y : array or tensor (n,)
            True class indices (or label paths for arrays).
        """
        bound_heap()      # once per process (see semcat_kit._core.memory)
        first = self.n
        p = self._as_tensor(probs, first)
        n = p.shape[0]
        dev = self._device
        C = self.n_classes
        if (isinstance(y, torch.Tensor) and not y.is_floating_point() and y.dtype != torch.bool and y.ndim == 1
                and len(y) == n):
            yt = y.detach().to(dev, torch.int64)           # stays on the device
            if self.check and n and bool(((yt < 0) | (yt >= C)).any()):
                self._labels(y.cpu().numpy(), n, first)      # raises, naming the rows
        else:
            yt = torch.as_tensor(self._labels(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y,
                                              n, first), device=dev)
        if n == 0:
            return
        T, S = self._tables, self._state
        if self.crm:
            p_np = p.float().cpu().numpy() if p.dtype not in (torch.float32, torch.float64) else p.cpu().numpy()
            ranked = torch.as_tensor(crm_predict(p_np, self.taxonomy, top_k=self.kmax, top_m=self.top_m,
                                                 _checked=True)[0], device=dev)
            top1 = topk_torch(p, 1)[:, 0]
        else:
            ranked = topk_torch(p, self.kmax)
            top1 = ranked[:, 0]
        pred = ranked[:, 0]

        hit = ranked == yt[:, None]                                    # (n, kmax), at most one True per row
        S["hits"] += hit.sum(dim=0)
        right = pred == yt
        S["tp"] += torch.bincount(yt[right], minlength=C)
        S["support"] += torch.bincount(yt, minlength=C)
        S["n_pred"] += torch.bincount(pred, minlength=C)
        S["level_ok"] += (T["levels"][pred] == T["levels"][yt]).sum(dim=0)

        anc = T["anc"]
        a_y = anc[yt]                                                  # (n, L)
        a_r = anc[ranked]                                              # (n, kmax, L)
        lca = ((a_r == a_y[:, None, :]) & (a_r >= 0)).sum(dim=2)       # (n, kmax) depth of the LCA
        d_y, d_r = T["depth"][yt], T["depth"][ranked]
        dist = torch.maximum(d_r, d_y[:, None]) - lca                  # (n, kmax) LCA height
        wrong = ~right
        S["sev_sum"] += dist[:, 0][wrong].sum()
        S["n_wrong"] += wrong.sum()
        S["dist_cum"] += dist.sum(dim=0)
        S["inter"] += lca[:, 0].sum()
        S["depth_pred"] += d_r[:, 0].sum()
        S["depth_true"] += d_y.sum()

        if T["nb"] is not None:
            nb = T["nb"]
            for i, k in enumerate(self.ks):
                kk = min(k, C, self.kmax)
                if nb.shape[1] < kk - 1:
                    self._narrow_warning = (f"nbrs@{kk}: the neighbour table has only {nb.shape[1]} neighbours per "
                                            f"class, fewer than k-1 = {kk - 1}; the score cannot reach 1. Build "
                                            f"neighbors with k >= {kk - 1}.")
                Sk = torch.cat([yt[:, None], nb[yt, : kk - 1]], dim=1)    # (n, <=kk), -1 = padding
                S["nbr_hits"][i] += (ranked[:, :kk, None] == Sk[:, None, :]).any(dim=2).sum()

        f64 = self._float64()
        conf = p.gather(1, top1[:, None])[:, 0].to(f64)
        b = torch.clamp(torch.ceil(conf * ECE_BINS).to(torch.int64) - 1, 0, ECE_BINS - 1)
        S["ece_count"] += torch.bincount(b, minlength=ECE_BINS)
        S["ece_conf"] += torch.zeros(ECE_BINS, dtype=f64, device=dev).index_add_(0, b, conf)
        S["ece_correct"] += torch.bincount(b[top1 == yt], minlength=ECE_BINS)
        self.n += n
        release_freed_memory()      # a (block, C) chunk's temporaries: keep the process flat over many chunks

    # ------------------------------------------------------------------ result
    def compute(self) -> pd.Series:
        """The metrics of everything added, as :func:`semcat_kit.judge.metrics.evaluate` returns them.

        Raises
        ------
        ValueError
            Nothing was added.
        """
        if self.n == 0:
            raise ValueError("probs has no rows: nothing to evaluate (call update() with at least one chunk)")
        S = {k: v.cpu().numpy() for k, v in self._state.items()}       # the only device -> host copy
        N, C = float(self.n), self.n_classes
        out: dict[str, float] = {"n": N}
        cum_hits = np.cumsum(S["hits"])
        for k in sorted({1, 5, *self.ks}):
            out[f"top{k}"] = float(cum_hits[min(k, C) - 1] / N)
        present = S["support"] > 0
        tp, sup, npred = (S[k][present].astype(np.float64) for k in ("tp", "support", "n_pred"))
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.where(npred > 0, tp / npred, 0.0)
            rec = tp / sup
            f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
        out["macro_f1"] = float(f1.mean())
        out["balanced_acc"] = float(rec.mean())
        for lv in range(1, self.n_levels + 1):
            out[f"acc_level_{lv}"] = float(S["level_ok"][lv - 1] / N)
        out["mistake_severity"] = float(S["sev_sum"] / S["n_wrong"]) if S["n_wrong"] > 0 else float("nan")
        cum_dist = np.cumsum(S["dist_cum"])
        for k in self.ks:
            kk = min(k, C)
            out[f"hdist@{k}"] = float(cum_dist[kk - 1] / (kk * N))
        if self.nb is not None:
            for i, k in enumerate(self.ks):
                kk = min(k, C, self.kmax)
                out[f"nbrs@{k}"] = float(S["nbr_hits"][i] / (kk * N))
            if self._narrow_warning:
                warnings.warn(self._narrow_warning, stacklevel=2)
        inter = float(S["inter"])
        hp, hr = inter / float(S["depth_pred"]), inter / float(S["depth_true"])
        out["hP"], out["hR"], out["hF1"] = hp, hr, (2 * hp * hr / (hp + hr) if hp + hr > 0 else 0.0)
        count = S["ece_count"].astype(np.float64)
        full = count > 0
        conf = S["ece_conf"][full] / count[full]
        acc = S["ece_correct"][full] / count[full]
        out["ece"] = float((count[full] / N * np.abs(acc - conf)).sum())
        names = metric_names(self.taxonomy, self.ks, neighbors=self.nb is not None)   # evaluate's keys and order
        s = pd.Series({k: out[k] for k in names}, dtype=float, name="crm" if self.crm else "argmax")
        s.attrs["decoding"] = "crm" if self.crm else "argmax"
        return s

    def __repr__(self) -> str:
        return (f"StreamingEvaluator(n={self.n}, classes={self.n_classes}, ks={self.ks}, crm={self.crm}, "
                f"device={self._device})")
