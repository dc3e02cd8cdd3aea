"""Evaluation of class-probability predictions over a taxonomy, and CRM decoding.

Everything here takes **probabilities** ``probs`` of shape (N, C) (rows >= 0 summing to 1; apply
a softmax to logits first) and integer class indices ``y`` of shape (N,) in ``[0, C)`` (or label
paths, mapped with ``taxonomy.index_of``), where class ``c`` is ``taxonomy.classes[c]``.

* :func:`evaluate` -- one call, one :class:`pandas.Series` of named metrics (keys in
  :data:`METRIC_DEFINITIONS`).
* per-sample / per-class helpers for plots and widgets (arrays in, arrays out):
  :func:`topk`, :func:`mistake_distances`, :func:`hierarchical_distance_at_k`,
  :func:`neighbors_at_k`, :func:`hierarchical_prf`, :func:`reliability_table`,
  :func:`expected_calibration_error`, :func:`per_class_report`, :func:`per_sample_report`.
* CRM decoding (Karthik et al., ICLR 2021): :func:`crm_rerank`, :func:`crm_predict`.

Tree distance ``d(i, j)`` is :meth:`semcat_kit.Taxonomy.lca_distance`: the height of the lowest
common ancestor, ``max(depth(i), depth(j)) - depth(lca(i, j))`` (Bertinetto et al. 2020).

Mistake severity alone can be gamed -- very soft training targets lower it while wrecking
top-1 accuracy -- so reports always show it next to ``top1`` and ``hdist@k``.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "evaluate",
    "METRIC_DEFINITIONS",
    "topk",
    "mistake_distances",
    "hierarchical_distance_at_k",
    "neighbors_at_k",
    "hierarchical_prf",
    "reliability_table",
    "expected_calibration_error",
    "per_class_report",
    "per_sample_report",
    "crm_rerank",
    "crm_predict",
    "check_probs",
    "check_labels",
]

#: Row-sum tolerance for probabilities (float32 softmax over 50k classes is within ~1e-5).
SUM_TOL = 1e-3
#: Number of equal-width confidence bins of the expected calibration error.
ECE_BINS = 15
#: CRM expected costs closer than this are ties (broken by higher probability, then lower index).
CRM_TIE_DECIMALS = 9
#: Working-memory budget (array elements) for row blocks.
_BLOCK_ELEMS = 4_000_000

#: Key -> definition of every metric :func:`evaluate` can return (``{k}``: each k of ``ks``,
#: ``{l}``: each level 1..L of the taxonomy).
METRIC_DEFINITIONS: dict[str, str] = {
    "n": "number of samples N",
    "top1": "top-1 accuracy: mean[pred_1 == y]",
    "top5": "top-5 accuracy: mean[y in top-5 ranked classes]",
    "top{k}": "top-k accuracy for each k in ks (k capped at C)",
    "macro_f1": "mean over classes present in y_true of F1_c = 2 P_c R_c / (P_c + R_c) (sklearn f1_score, "
                "labels = classes present in y_true, zero_division=0)",
    "balanced_acc": "mean over classes present in y_true of recall_c = TP_c / support_c "
                    "(sklearn recall_score(labels=present, average='macro') = balanced_accuracy_score)",
    "acc_level_{l}": "mean[anc_l(pred_1) == anc_l(y)]: top-1 right at taxonomy depth l (a class shallower "
                     "than l stands for itself)",
    "mistake_severity": "mean d(pred_1, y) over samples with pred_1 != y (NaN when there is no mistake)",
    "hdist@{k}": "mean over samples of (1/k) sum_{r<=k} d(pred_r, y): hierarchical distance of the top-k",
    "nbrs@{k}": "mean over samples of |top-k ∩ ({y} ∪ first k-1 neighbours of y)| / k (only with neighbors)",
    "hP": "hierarchical precision sum_n |A(pred_n) ∩ A(y_n)| / sum_n |A(pred_n)|, A = ancestors incl. self, "
          "excl. root",
    "hR": "hierarchical recall sum_n |A(pred_n) ∩ A(y_n)| / sum_n |A(y_n)|",
    "hF1": "2 hP hR / (hP + hR)",
    "ece": f"expected calibration error, {ECE_BINS} equal-width bins of top-1 confidence: "
           "sum_b (|B_b|/N) |acc(B_b) - conf(B_b)|",
}


# ---------------------------------------------------------------------------------- validation
def _fmt_rows(rows: np.ndarray, limit: int = 8) -> str:
    rows = np.asarray(rows)
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" (and {len(rows) - limit} more)" if len(rows) > limit else ""
    return f"[{shown}]{more}"


def check_probs(probs, n_classes: int | None = None, *, name: str = "probs") -> np.ndarray:
    """Validate a (N, C) probability matrix and return it as a float array.

    Logits are not accepted: each row must be >= 0 and sum to 1 within :data:`SUM_TOL`.

    Raises
    ------
    ValueError
        Wrong shape, no rows, NaN/inf values, negative values or row sums away from 1; the message
        names the offending rows.
    """
    if hasattr(probs, "detach"):  # torch tensor
        probs = probs.detach().cpu().numpy()
    p = np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_samples, n_classes) array, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.number) or np.issubdtype(p.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {p.dtype}")
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.shape[0] == 0:
        raise ValueError(f"{name} has no rows: nothing to evaluate")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"{name} has {p.shape[1]} columns but the taxonomy has {n_classes} classes; "
                         "column c must be the probability of taxonomy.classes[c]")
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} has NaN or infinite values in rows {_fmt_rows(np.flatnonzero(bad))}; "
                         "fix or drop those samples")
    neg = (p < 0).any(axis=1)
    if neg.any():
        raise ValueError(f"{name} has negative values in rows {_fmt_rows(np.flatnonzero(neg))}: these look "
                         "like logits. Pass probabilities (e.g. scipy.special.softmax(logits, axis=1))")
    s = p.sum(axis=1, dtype=np.float64)
    off = np.abs(s - 1.0) > SUM_TOL
    if off.any():
        rows = np.flatnonzero(off)
        sums = ", ".join(f"{s[r]:.4g}" for r in rows[:5])
        raise ValueError(f"{name} rows {_fmt_rows(rows)} sum to {sums}, not 1: pass probabilities, not "
                         "logits or scores (apply a softmax, or renormalise each row)")
    return p


def check_labels(y, n_samples: int | None, taxonomy=None, *, name: str = "y_true",
                 n_classes: int | None = None) -> np.ndarray:
    """Validate class labels: integer indices in ``[0, C)`` or label paths (mapped by ``taxonomy``)."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    if isinstance(y, pd.Series):
        y = y.to_numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class per sample), got shape {arr.shape}")
    if n_samples is not None and len(arr) != n_samples:
        raise ValueError(f"{name} has {len(arr)} entries but probs has {n_samples} rows; they must align")
    C = n_classes if n_classes is not None else (taxonomy.n_classes if taxonomy is not None else None)
    if arr.dtype.kind in "OUS":
        if taxonomy is None:
            raise ValueError(f"{name} holds strings; pass integer class indices or a taxonomy to map them")
        return np.asarray(taxonomy.index_of(list(arr)), dtype=np.int64)
    if arr.dtype.kind == "b" or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        nonint = ~np.isfinite(arr) | (arr != np.round(arr))
        if nonint.any():
            raise ValueError(f"{name} has non-integer values in rows {_fmt_rows(np.flatnonzero(nonint))}; "
                             "pass class indices")
    arr = arr.astype(np.int64)
    if C is not None:
        out = (arr < 0) | (arr >= C)
        if out.any():
            rows = np.flatnonzero(out)
            raise ValueError(f"{name} rows {_fmt_rows(rows)} hold class indices "
                             f"{[int(v) for v in arr[rows[:5]]]} outside [0, {C}); "
                             "use taxonomy.index_of(labels) to get indices")
    return arr


def _neighbor_indices(neighbors, n_classes: int) -> np.ndarray:
    idx = neighbors.indices if hasattr(neighbors, "indices") else neighbors
    if hasattr(idx, "detach"):
        idx = idx.detach().cpu().numpy()
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[0] != n_classes:
        raise ValueError(f"neighbors.indices must be (n_classes={n_classes}, k), got shape {idx.shape}; "
                         "build it on the same taxonomy")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"neighbors.indices must be integers (padding -1), got dtype {idx.dtype}")
    bad = (idx < -1) | (idx >= n_classes)
    if bad.any():
        raise ValueError(f"neighbors.indices rows {_fmt_rows(np.flatnonzero(bad.any(1)))} hold values outside "
                         f"[-1, {n_classes})")
    return idx.astype(np.int64, copy=False)


def _check_k(k, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{what} must be a positive integer, got {k!r}")
    return int(k)


def _row_block(n_cols: int, per_row: int = 1) -> int:
    return max(1, _BLOCK_ELEMS // max(1, n_cols * per_row))


# ---------------------------------------------------------------------------------- ranking
def topk(scores, k: int, tiebreak=None) -> np.ndarray:
    """Indices of the ``k`` highest scores of each row, best first (k capped at C).

    Ties are deterministic: equal scores are ordered by higher ``tiebreak`` (same shape, optional),
    then by lower class index.

    Parameters
    ----------
    scores : array (N, C)
        Probabilities or any scores (``-inf`` allowed, NaN not).
    k : int
    tiebreak : array (N, C), optional

    Returns
    -------
    numpy.ndarray (N, min(k, C)) int64
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_samples, n_classes), got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"scores has NaN in rows {_fmt_rows(np.flatnonzero(np.isnan(s).any(1)))}")
    N, C = s.shape
    k = min(_check_k(k), C)
    if N == 0:
        return np.empty((0, k), dtype=np.int64)
    tb = None if tiebreak is None else np.asarray(tiebreak)
    if tb is not None and tb.shape != s.shape:
        raise ValueError(f"tiebreak has shape {tb.shape}, scores {s.shape}")
    out = np.empty((N, k), dtype=np.int64)
    for a in range(0, N, _row_block(C, 2)):
        b = min(N, a + _row_block(C, 2))
        out[a:b] = _topk_block(s[a:b], k, None if tb is None else tb[a:b])
    return out


def _topk_block(s: np.ndarray, k: int, tb: np.ndarray | None) -> np.ndarray:
    n, C = s.shape
    kth = np.partition(s, C - k, axis=1)[:, C - k]
    rows, cols = np.nonzero(s >= kth[:, None])           # >= k candidates per row (ties included)
    vals = s[rows, cols]
    keys = [cols] + ([] if tb is None else [-tb[rows, cols]]) + [-vals, rows]
    order = np.lexsort(keys)
    counts = np.bincount(rows, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    take = starts[:, None] + np.arange(k)[None, :]
    return cols[order][take]


def _rank(probs: np.ndarray, taxonomy, k: int, crm: bool, top_m: int | None) -> np.ndarray:
    if not crm:
        return topk(probs, k)
    return crm_predict(probs, taxonomy, top_k=k, top_m=top_m, _checked=True)[0]


# ---------------------------------------------------------------------------------- per-sample metrics
def mistake_distances(pred, y, taxonomy) -> np.ndarray:
    """Tree distance ``d(pred_n, y_n)`` of each sample (0 when right).

    ``d(i, j) = max(depth(i), depth(j)) - depth(lca(i, j))`` (LCA height, Bertinetto et al. 2020).
    ``pred`` may be (N,) or (N, k) (e.g. :func:`topk` output); ``y`` is (N,).
    """
    C = taxonomy.n_classes
    y = check_labels(y, None, taxonomy, name="y")
    p = np.asarray(pred)
    if p.ndim not in (1, 2) or p.shape[0] != len(y):
        raise ValueError(f"pred must be (N,) or (N, k) with N = len(y) = {len(y)}, got shape {p.shape}")
    check_labels(p.ravel(), None, taxonomy, name="pred", n_classes=C)
    return taxonomy.lca_distance(p.astype(np.int64), y if p.ndim == 1 else y[:, None])


def hierarchical_distance_at_k(ranked, y, taxonomy, k: int) -> np.ndarray:
    """Per-sample hierarchical distance@k: ``(1/k) sum_{r<=k} d(ranked_r, y)`` (Bertinetto et al. 2020).

    ``ranked`` is (N, >= k) classes best first (:func:`topk`); k is capped at its width.
    """
    r = np.asarray(ranked)
    k = min(_check_k(k), r.shape[1])
    return mistake_distances(r[:, :k], y, taxonomy).mean(axis=1)


def neighbors_at_k(ranked, y, neighbors, k: int) -> np.ndarray:
    """Per-sample neighbours@k: the fraction of the top-k predictions that are semantic neighbours.

    ``|top-k(p) ∩ S_k(y)| / k`` with ``S_k(y) = {y} ∪ {first k-1 neighbours of y}`` (the true class
    counts as its own nearest neighbour). k is capped at C and at the width of ``ranked``. If
    ``neighbors`` has fewer than k-1 (valid) neighbours for a class the set is smaller and the
    score cannot reach 1 (a warning is raised when the neighbour table is too narrow).
    """
    r = np.asarray(ranked, dtype=np.int64)
    y = check_labels(y, r.shape[0], None, name="y")
    nb = neighbors.indices if hasattr(neighbors, "indices") else neighbors
    nb = _neighbor_indices(nb, np.asarray(nb).shape[0])
    C = nb.shape[0]
    if len(y) and (y.max() >= C or y.min() < 0):
        rows = np.flatnonzero((y >= C) | (y < 0))
        raise ValueError(f"y rows {_fmt_rows(rows)} hold class indices outside [0, {C}) (the neighbour table has "
                         f"{C} rows); build the neighbours on the same taxonomy as y")
    k = min(_check_k(k), C, r.shape[1])
    if nb.shape[1] < k - 1:
        warnings.warn(f"nbrs@{k}: the neighbour table has only {nb.shape[1]} neighbours per class, fewer than "
                      f"k-1 = {k - 1}; the score cannot reach 1. Build neighbors with k >= {k - 1}.",
                      stacklevel=2)
    S = np.concatenate([y[:, None], nb[y, : k - 1]], axis=1)        # (N, <=k), -1 = padding
    T = r[:, :k]
    hits = np.zeros(len(y), dtype=np.int64)
    step = _row_block(k * S.shape[1])
    for a in range(0, len(y), step):
        hits[a:a + step] = (T[a:a + step, :, None] == S[a:a + step, None, :]).any(-1).sum(-1)
    return hits / k


def hierarchical_prf(pred, y, taxonomy) -> tuple[float, float, float]:
    """Micro-averaged hierarchical precision, recall and F1 (Kiritchenko et al. 2005).

    With ``A(c)`` the ancestors of class c including c itself and excluding the root:
    ``hP = sum_n |A(pred_n) ∩ A(y_n)| / sum_n |A(pred_n)|``,
    ``hR = sum_n |A(pred_n) ∩ A(y_n)| / sum_n |A(y_n)|``, ``hF1 = 2 hP hR / (hP + hR)``.
    In a tree ``|A(i) ∩ A(j)| = depth(lca(i, j))`` and ``|A(i)| = depth(i)``.
    """
    y = check_labels(y, None, taxonomy, name="y")
    pred = check_labels(pred, len(y), taxonomy, name="pred")
    inter = float(taxonomy.lca_depth(pred, y).sum())
    hp = inter / float(taxonomy.depth(pred).sum())
    hr = inter / float(taxonomy.depth(y).sum())
    hf = 2 * hp * hr / (hp + hr) if hp + hr > 0 else 0.0
    return hp, hr, hf


def reliability_table(probs, y, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Per-bin calibration of the top-1 confidence (for reliability diagrams).

    Bins are equal-width, right-closed: ``((b-1)/B, b/B]``. Columns ``lo, hi, count, confidence``
    (mean top-1 probability), ``accuracy`` (mean[argmax == y]), ``gap = |accuracy - confidence|``;
    empty bins have count 0 and NaN means.
    """
    p = check_probs(probs)
    y = check_labels(y, p.shape[0], n_classes=p.shape[1])
    n_bins = _check_k(n_bins, "n_bins")
    pred = topk(p, 1)[:, 0]
    conf = p[np.arange(len(y)), pred].astype(np.float64)
    correct = (pred == y).astype(np.float64)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(b, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(b, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": count, "confidence": confidence,
                         "accuracy": accuracy, "gap": np.abs(accuracy - confidence)})


def expected_calibration_error(probs, y, n_bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): ``sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|`` over equal-width bins of
    top-1 confidence (see :func:`reliability_table`)."""
    t = reliability_table(probs, y, n_bins)
    n = t["count"].sum()
    full = t["count"] > 0
    return float((t.loc[full, "count"] / n * t.loc[full, "gap"]).sum())


# ---------------------------------------------------------------------------------- evaluate
def evaluate(probs, y_true, taxonomy, neighbors=None, ks: Sequence[int] = (1, 5, 20),
             crm: bool = False, top_m: int | None = None) -> pd.Series:
    """Named metrics of a probability matrix against true classes, in one row.

    Parameters
    ----------
    probs : array (N, C)
        Class probabilities (rows >= 0 summing to 1; logits are refused -- apply a softmax);
        column c is ``taxonomy.classes[c]``.
    y_true : array (N,)
        True class indices (or label paths, mapped with ``taxonomy.index_of``).
    taxonomy : Taxonomy
    neighbors : Neighbors or array (C, k), optional
        Semantic neighbours (``.indices`` padded with -1); adds the ``nbrs@k`` metrics.
    ks : sequence of int
        The k of ``top{k}``, ``hdist@{k}`` and ``nbrs@{k}`` (each capped at C; the key keeps the
        requested k).
    crm : bool
        Rank classes by CRM (:func:`crm_predict`, minimum expected tree distance) instead of by
        probability. All ranking metrics (top-k, macro-F1, balanced accuracy, level accuracy,
        severity, hdist, nbrs, hP/hR/hF1) then use the CRM ranking; ``ece`` stays that of the
        original probabilities and their argmax (CRM does not produce probabilities).
    top_m : int, optional
        Candidate count for CRM (see :func:`crm_rerank`); ignored unless ``crm``.

    Returns
    -------
    pandas.Series
        In this order (``name`` is ``"crm"`` or ``"argmax"``):

        - ``n``: number of samples N.
        - ``top1``, ``top5`` and ``top{k}`` for k in ks, ascending: ``mean[y in first k ranked
          classes]``.
        - ``macro_f1``: ``mean_c 2 P_c R_c / (P_c + R_c)`` over the classes present in y_true
          (sklearn ``f1_score(labels=present, average="macro", zero_division=0)``; predictions of
          absent classes still count as misses of the true class).
        - ``balanced_acc``: ``mean_c TP_c / support_c`` over the classes present in y_true
          (sklearn macro ``recall_score`` over those labels, which equals
          ``balanced_accuracy_score``) -- both read the long tail.
        - ``acc_level_1`` .. ``acc_level_L`` (L = taxonomy depth): ``mean[anc_l(pred) == anc_l(y)]``,
          the top-1 prediction right at depth l (a class shallower than l stands for itself).
        - ``mistake_severity``: ``mean d(pred, y)`` over wrong top-1 predictions (NaN if none).
        - ``hdist@{k}``: ``mean_n (1/k) sum_{r<=k} d(ranked_{n,r}, y_n)`` (correct ones count 0).
        - ``nbrs@{k}`` (only with ``neighbors``): ``mean_n |top-k ∩ ({y} ∪ k-1 nearest neighbours
          of y)| / k``, the fraction of the top-k that is the true class or its neighbours.
        - ``hP``, ``hR``, ``hF1``: micro hierarchical precision/recall/F1 over ancestor sets
          (incl. the class, excl. the root), see :func:`hierarchical_prf`.
        - ``ece``: ``sum_b (|B_b|/N) |acc(B_b) - conf(B_b)|``, 15 equal-width bins of top-1
          confidence.

        ``d`` is the LCA height :meth:`Taxonomy.lca_distance` (Bertinetto et al. 2020,
        "Making Better Mistakes"). Mistake severity can be gamed (very soft labels lower it while
        wrecking top-1), so always report it next to ``top1`` and ``hdist@k``.
    """
    from sklearn.metrics import f1_score, recall_score

    C = taxonomy.n_classes
    p = check_probs(probs, C)
    y = check_labels(y_true, p.shape[0], taxonomy)
    ks = [_check_k(k, "each of ks") for k in ks]
    nb = _neighbor_indices(neighbors, C) if neighbors is not None else None
    if top_m is not None:
        _check_k(top_m, "top_m")

    kmax = min(max([5, *ks]), C)
    ranked = _rank(p, taxonomy, kmax, crm, top_m)
    pred = ranked[:, 0]
    hit = ranked == y[:, None]

    out: dict[str, float] = {"n": float(len(y))}
    for k in sorted({1, 5, *ks}):
        out[f"top{k}"] = float(hit[:, : min(k, C)].any(axis=1).mean())
    present = np.unique(y)
    out["macro_f1"] = float(f1_score(y, pred, labels=present, average="macro", zero_division=0))
    # = balanced_accuracy_score(y, pred), without its warnings about classes absent from y_true
    out["balanced_acc"] = float(recall_score(y, pred, labels=present, average="macro", zero_division=0))
    for lv in range(1, taxonomy.max_depth + 1):
        out[f"acc_level_{lv}"] = float((taxonomy.level_index(pred, lv) == taxonomy.level_index(y, lv)).mean())
    dist = taxonomy.lca_distance(ranked, y[:, None])               # (N, kmax)
    wrong = pred != y
    out["mistake_severity"] = float(dist[wrong, 0].mean()) if wrong.any() else float("nan")
    for k in ks:
        out[f"hdist@{k}"] = float(dist[:, : min(k, C)].mean(axis=1).mean())
    if nb is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k in ks:
                out[f"nbrs@{k}"] = float(neighbors_at_k(ranked, y, nb, k).mean())
        if caught:
            warnings.warn(str(caught[-1].message), stacklevel=2)
    out["hP"], out["hR"], out["hF1"] = hierarchical_prf(pred, y, taxonomy)
    out["ece"] = expected_calibration_error(p, y)
    s = pd.Series(out, dtype=float, name="crm" if crm else "argmax")
    s.attrs["decoding"] = "crm" if crm else "argmax"
    return s


# ---------------------------------------------------------------------------------- per-class / per-sample
def per_class_report(probs, y, taxonomy, *, crm: bool = False, top_m: int | None = None,
                     all_classes: bool = False) -> pd.DataFrame:
    """One row per class: how often it is right, and how bad its mistakes are.

    Columns: ``class`` (path), ``name``, ``depth``, ``support`` (true samples), ``n_predicted``,
    ``accuracy`` (recall ``TP_c / support_c``), ``precision`` (``TP_c / n_predicted_c``, NaN if never
    predicted), ``mean_distance`` (mean ``d(pred, y)`` over the class's samples, correct ones 0),
    ``mistake_severity`` (mean ``d`` over its wrong samples, NaN if none), ``top_confusion`` (the
    class most often predicted in its place) and ``top_confusion_count``. Indexed by class index;
    only classes with support > 0 unless ``all_classes``.
    """
    C = taxonomy.n_classes
    p = check_probs(probs, C)
    y = check_labels(y, p.shape[0], taxonomy)
    pred = _rank(p, taxonomy, 1, crm, top_m)[:, 0]
    d = taxonomy.lca_distance(pred, y).astype(np.float64)
    wrong = pred != y
    support = np.bincount(y, minlength=C)
    n_pred = np.bincount(pred, minlength=C)
    tp = np.bincount(y[~wrong], minlength=C)
    n_wrong = np.bincount(y[wrong], minlength=C)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = tp / support
        prec = tp / n_pred
        mean_d = np.bincount(y, weights=d, minlength=C) / support
        sev = np.bincount(y[wrong], weights=d[wrong], minlength=C) / n_wrong
    conf_cls = np.full(C, -1, dtype=np.int64)
    conf_cnt = np.zeros(C, dtype=np.int64)
    if wrong.any():
        pairs = pd.DataFrame({"y": y[wrong], "pred": pred[wrong]}).value_counts().reset_index()
        pairs = pairs.sort_values(["y", "count", "pred"], ascending=[True, False, True]).drop_duplicates("y")
        conf_cls[pairs["y"].to_numpy()] = pairs["pred"].to_numpy()
        conf_cnt[pairs["y"].to_numpy()] = pairs["count"].to_numpy()
    names = np.asarray(taxonomy.classes, dtype=object)
    df = pd.DataFrame({
        "class": names, "name": np.asarray(taxonomy.names, dtype=object),
        "depth": taxonomy.depth(np.arange(C)), "support": support, "n_predicted": n_pred,
        "accuracy": acc, "precision": prec, "mean_distance": mean_d, "mistake_severity": sev,
        "top_confusion": np.where(conf_cls >= 0, names[np.maximum(conf_cls, 0)], None),
        "top_confusion_count": conf_cnt,
    })
    df.index.name = "class_index"
    return df if all_classes else df[support > 0]


def per_sample_report(probs, y, taxonomy, *, k: int = 5, crm: bool = False,
                      top_m: int | None = None) -> pd.DataFrame:
    """One row per sample: ``y``, ``pred``, ``true_class``, ``pred_class``, ``confidence``
    (probability of ``pred``), ``p_true``, ``correct``, ``distance`` (``d(pred, y)``), ``rank_true``
    (1-based rank of y, 0 when not in the top-k) and ``topk`` (list of the k best class indices)."""
    C = taxonomy.n_classes
    p = check_probs(probs, C)
    y = check_labels(y, p.shape[0], taxonomy)
    ranked = _rank(p, taxonomy, min(_check_k(k), C), crm, top_m)
    pred = ranked[:, 0]
    hit = ranked == y[:, None]
    rank_true = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    names = np.asarray(taxonomy.classes, dtype=object)
    rows = np.arange(len(y))
    return pd.DataFrame({
        "y": y, "pred": pred, "true_class": names[y], "pred_class": names[pred],
        "confidence": p[rows, pred], "p_true": p[rows, y], "correct": pred == y,
        "distance": taxonomy.lca_distance(pred, y), "rank_true": rank_true, "topk": list(ranked),
    })


# ---------------------------------------------------------------------------------- CRM
def _tree_operators(taxonomy):
    """Sparse ancestor indicator A (C, V), depth helpers and per-class ancestor columns, cached on
    the taxonomy object (built once, O(C depth))."""
    cache = getattr(taxonomy, "_crm_ops", None)
    if cache is not None:
        return cache
    anc = taxonomy.ancestor_matrix()[:, 1:]                       # drop the root column
    C = anc.shape[0]
    rows, cols = np.nonzero(anc >= 0)
    nodes, colidx = np.unique(anc[rows, cols], return_inverse=True)
    A = sp.csr_matrix((np.ones(len(rows)), (rows, colidx)), shape=(C, len(nodes)))
    depth = np.asarray(taxonomy.depth(np.arange(C)), dtype=np.int64)
    dvals, dpos = np.unique(depth, return_inverse=True)
    H = sp.csr_matrix((np.ones(C), (np.arange(C), dpos)), shape=(C, len(dvals)))
    Mx = np.maximum(dvals[:, None], dvals[None, :]).astype(np.float64)  # max(depth_j, depth_k)
    anc_cols = np.full(anc.shape, -1, dtype=np.int64)             # (C, depth) columns of A per class
    anc_cols[rows, cols] = colidx
    ops = (A, A.T.tocsr(), H, Mx, dpos, anc_cols)
    try:
        taxonomy._crm_ops = ops
    except AttributeError:  # pragma: no cover - slotted objects
        pass
    return ops


def _crm_cost_exact(p: np.ndarray, taxonomy) -> np.ndarray:
    """Expected tree distance ``cost[n, k] = sum_j p[n, j] d(j, k)`` for every class, exactly.

    With ``d(j, k) = max(depth_j, depth_k) - |A(j) ∩ A(k)|``: the first term only needs the
    probability mass per depth, the second is ``P A A^T`` with the sparse (C, nodes) ancestor
    indicator A (mass of each subtree, summed over the ancestors of k). O(N C depth), never C x C.
    """
    A, At, H, Mx, dpos, _ = _tree_operators(taxonomy)
    P = np.asarray(p, dtype=np.float64)
    subtree = (At @ P.T)                                          # (V, N) mass below each node
    shared = (A @ subtree).T                                      # (N, C) sum_j p_j |A(j) ∩ A(k)|
    per_depth = (H.T @ P.T).T                                     # (N, n_depths)
    maxterm = (per_depth @ Mx)[:, dpos]                           # (N, C) sum_j p_j max(d_j, d_k)
    return maxterm - shared


def _crm_cost_topm(p: np.ndarray, taxonomy, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (N, m) = top-m classes by probability and their expected distance under the
    renormalised top-m probabilities q: ``cost[n, a] = sum_b q[n, b] d(cand_b, cand_a)``.

    Same decomposition as the exact version, restricted to the candidates: the mass below each
    (sample, node) pair is summed over the candidates' ancestors with one sort, O(N m depth).
    """
    A, At, H, Mx, dpos, anc_cols = _tree_operators(taxonomy)
    n = p.shape[0]
    cand = topk(p, m)
    q = np.take_along_axis(p, cand, axis=1).astype(np.float64)
    q /= q.sum(axis=1, keepdims=True)
    a = anc_cols[cand]                                            # (n, m, depth) node columns, -1 pad
    valid = a >= 0
    keys = (np.arange(n, dtype=np.int64)[:, None, None] * A.shape[1] + a)[valid]
    uniq, inv = np.unique(keys, return_inverse=True)
    mass = np.bincount(inv, weights=np.broadcast_to(q[:, :, None], a.shape)[valid], minlength=len(uniq))
    shared = np.zeros(a.shape)
    shared[valid] = mass[inv]                                     # mass below each ancestor of a
    shared = shared.sum(axis=2)                                   # (n, m) sum_b q_b |A(b) ∩ A(a)|
    dc = dpos[cand]
    per_depth = np.bincount((np.arange(n)[:, None] * Mx.shape[0] + dc).ravel(), weights=q.ravel(),
                            minlength=n * Mx.shape[0]).reshape(n, Mx.shape[0])
    maxterm = np.take_along_axis(per_depth @ Mx, dc, axis=1)      # sum_b q_b max(d_b, d_a)
    return cand, maxterm - shared


def _resolve_top_m(top_m, C: int) -> int | None:
    if top_m is None:
        return None
    return min(_check_k(top_m, "top_m"), C)


def crm_rerank(probs, taxonomy, top_m: int | None = None) -> np.ndarray:
    """CRM scores: negative expected tree distance of predicting each class (Karthik et al., ICLR 2021).

    ``score[n, k] = - sum_j p[n, j] d(j, k)``; the CRM decision is ``argmax_k score`` =
    ``argmin_k sum_j p_j d(j, k)`` (ties within 1e-9 broken by higher probability, then lower
    index, in :func:`crm_predict`).

    Parameters
    ----------
    probs : array (N, C)
        Probabilities of any model (logits are refused).
    taxonomy : Taxonomy
    top_m : int, optional
        None: exact over all classes, computed in O(N C depth) from subtree masses (no C x C matrix,
        fine for tens of thousands of classes). An int m: both the candidates k and the summed j are
        restricted to the top-m classes by probability, with those probabilities renormalised;
        classes outside the candidates score ``-inf``. m >= C equals the exact version.

    Returns
    -------
    numpy.ndarray (N, C) float64, higher is better.
    """
    C = taxonomy.n_classes
    p = check_probs(probs, C)
    m = _resolve_top_m(top_m, C)
    out = np.full(p.shape, -np.inf)
    step = _row_block(C, 4)
    for a in range(0, p.shape[0], step):
        block = p[a:a + step]
        if m is None:
            out[a:a + step] = -np.round(_crm_cost_exact(block, taxonomy), CRM_TIE_DECIMALS)
        else:
            cand, cost = _crm_cost_topm(block, taxonomy, m)
            np.put_along_axis(out[a:a + step], cand, -np.round(cost, CRM_TIE_DECIMALS), axis=1)
    return out


def crm_predict(probs, taxonomy, top_k: int = 5, top_m: int | None = None,
                _checked: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CRM ranking: the ``top_k`` classes of least expected tree distance, best first.

    Ranks by ``cost_k = sum_j p_j d(j, k)`` ascending (see :func:`crm_rerank` for ``top_m``);
    costs equal within 1e-9 are ordered by higher probability, then lower index. When ``top_k``
    exceeds the m candidates, the remaining places follow the probability order.

    Returns
    -------
    indices : numpy.ndarray (N, min(top_k, C)) int64
    costs : numpy.ndarray (N, min(top_k, C)) float64, expected distance of each (inf outside the
        candidates).
    """
    C = taxonomy.n_classes
    p = probs if _checked else check_probs(probs, C)
    k = min(_check_k(top_k, "top_k"), C)
    _resolve_top_m(top_m, C)
    idx = np.empty((p.shape[0], k), dtype=np.int64)
    cost = np.empty((p.shape[0], k), dtype=np.float64)
    step = _row_block(C, 6)
    for a in range(0, p.shape[0], step):
        block = p[a:a + step]
        scores = crm_rerank(block, taxonomy, top_m=top_m)
        idx[a:a + step] = topk(scores, k, tiebreak=block)
        cost[a:a + step] = -np.take_along_axis(scores, idx[a:a + step], axis=1)
    return idx, cost
