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

import re
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .._core.contracts import SUM_TOL, as_k, as_labels, as_neighbor_indices, as_probs, fmt_rows, row_block  # noqa: F401
from .decoding import CRM_TIE_DECIMALS, crm_predict, crm_rerank, topk  # noqa: F401  (re-exported)

__all__ = [
    "evaluate",
    "METRIC_DEFINITIONS",
    "METRICS",
    "Metric",
    "register_metric",
    "metric_info",
    "metric_names",
    "lower_is_better",
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
    "hedging_metrics",
    "hedging_metric_names",
    "precision_specificity_curve",
]

#: Number of equal-width confidence bins of the expected calibration error.
ECE_BINS = 15

# ---------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Metric:
    """What one metric is: its key (a pattern with ``{k}`` / ``{l}``), formula, direction and needs.

    ``direction`` is ``"max"`` (higher is better), ``"min"`` (lower is better) or ``"none"`` (a
    count). ``needs_neighbors``: only computed when semantic neighbours are given. ``kind`` groups
    metrics for figures (``"accuracy"``, ``"tree distance"``, ``"calibration"``, ``"loss"``,
    ``"count"``, ``"time"``, ``"hedging"``). ``source``:
    ``"evaluate"`` for the metrics :func:`evaluate` returns, ``"train"`` for training-loop values
    (losses, timings) that share the same direction rules in histories, tables and figures,
    ``"hedge"`` for :func:`hedging_metrics` (``{p}``: a target precision in percent, ``98`` or ``99.5``).
    """

    key: str
    formula: str
    direction: str = "max"
    needs_neighbors: bool = False
    source: str = "evaluate"
    kind: str = "accuracy"

    @property
    def pattern(self) -> re.Pattern:
        rx = (re.escape(self.key).replace(r"\{k\}", r"(?P<k>\d+)").replace(r"\{l\}", r"(?P<l>\d+)")
              .replace(r"\{p\}", r"(?P<p>\d+(?:\.\d+)?)"))
        return re.compile(rx + "$")


#: Every metric, in the order :func:`evaluate` returns them. Add one with :func:`register_metric`.
METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric, *, overwrite: bool = False) -> Metric:
    """Add a metric's definition to :data:`METRICS` (its key must be new unless ``overwrite``)."""
    if metric.direction not in ("max", "min", "none"):
        raise ValueError(f"Metric.direction must be 'max', 'min' or 'none', not {metric.direction!r}")
    if metric.key in METRICS and not overwrite:
        raise ValueError(f"metric {metric.key!r} is already registered; pass overwrite=True to replace it")
    METRICS[metric.key] = metric
    return metric


for _m in [
    Metric("n", "number of samples N", "none", kind="count"),
    Metric("top{k}", "top-k accuracy for each k in ks (k capped at C): mean[y in the first k ranked classes]"),
    Metric("macro_f1", "mean over classes present in y_true of F1_c = 2 P_c R_c / (P_c + R_c) (sklearn f1_score, "
                       "labels = classes present in y_true, zero_division=0)"),
    Metric("balanced_acc", "mean over classes present in y_true of recall_c = TP_c / support_c "
                           "(sklearn recall_score(labels=present, average='macro') = balanced_accuracy_score)"),
    Metric("acc_level_{l}", "mean[anc_l(pred_1) == anc_l(y)]: top-1 right at taxonomy depth l (a class shallower "
                            "than l stands for itself)"),
    Metric("mistake_severity", "mean d(pred_1, y) over samples with pred_1 != y (NaN when there is no mistake)",
           "min", kind="tree distance"),
    Metric("hdist@{k}", "mean over samples of (1/k) sum_{r<=k} d(pred_r, y): hierarchical distance of the top-k",
           "min", kind="tree distance"),
    Metric("nbrs@{k}", "mean over samples of |top-k ∩ ({y} ∪ first k-1 neighbours of y)| / k (only with neighbors)",
           "max", needs_neighbors=True),
    Metric("hP", "hierarchical precision sum_n |A(pred_n) ∩ A(y_n)| / sum_n |A(pred_n)|, A = ancestors incl. self, "
                 "excl. root"),
    Metric("hR", "hierarchical recall sum_n |A(pred_n) ∩ A(y_n)| / sum_n |A(y_n)|"),
    Metric("hF1", "2 hP hR / (hP + hR)"),
    Metric("ece", f"expected calibration error, {ECE_BINS} equal-width bins of top-1 confidence: "
                  "sum_b (|B_b|/N) |acc(B_b) - conf(B_b)|", "min", kind="calibration"),
    # training-loop values (histories, compare's timing columns)
    Metric("loss", "mean training objective per item (focal + kl_weight * KL, or the codes BCE)", "min", source="train", kind="loss"),
    Metric("focal", "mean focal term per item", "min", source="train", kind="loss"),
    Metric("kl", "mean KL(soft target || softmax(z)) per item", "min", source="train", kind="loss"),
    Metric("bce", "mean binary cross-entropy of the taxonomy codes per item", "min", source="train", kind="loss"),
    Metric("nll", "mean negative log-likelihood of the true class", "min", source="train", kind="loss"),
    Metric("seconds", "wall-clock seconds", "min", source="train", kind="time"),
    # hedged decoding (semcat_kit.judge.hedging): threshold calibrated on val for precision p %, read on test
    Metric("leaf_coverage@{p}", "share of test products given a single class by the hedged decoder whose threshold "
                                "is calibrated on val for precision p% (RCPS, delta 0.1)", "max", source="hedge",
           kind="hedging"),
    Metric("specificity@{p}", "mean depth of the hedged node at precision p% (0 = root)", "max", source="hedge",
           kind="hedging"),
    Metric("specificity_bits@{p}", "mean information of the hedged node at precision p%: log2 C - log2 |classes "
                                   "under it| (Deng et al. 2012)", "max", source="hedge", kind="hedging"),
    Metric("hedged_precision@{p}", "realised test precision at the threshold calibrated for p%: mean[true class under "
                                   "the hedged node]", "max", source="hedge", kind="hedging"),
    Metric("review@{p}", "share of test products marked needs_review at precision p% (the root, or node "
                         "probability < the floor)", "min", source="hedge", kind="hedging"),
]:
    register_metric(_m)

#: Key -> formula of every metric :func:`evaluate` can return (``{k}``: each k of ``ks``,
#: ``{l}``: each level 1..L of the taxonomy) -- a view of :data:`METRICS`.
METRIC_DEFINITIONS: dict[str, str] = {
    "n": METRICS["n"].formula,
    "top1": "top-1 accuracy: mean[pred_1 == y]",
    "top5": "top-5 accuracy: mean[y in top-5 ranked classes]",
    **{m.key: m.formula for m in METRICS.values() if m.source == "evaluate" and m.key != "n"},
}


def metric_info(name: str) -> Metric:
    """The :class:`Metric` of a concrete metric name (``"hdist@5"``, ``"val_top1"``, ``"acc_level_2"``,
    ``"val_loss"``, a ``compare`` column such as ``"top1_mean"`` or ``"train_seconds"``).

    Raises
    ------
    KeyError
        No registered metric matches; the message lists the registered keys.
    """
    base = str(name)
    for prefix in ("val_", "test_", "train_"):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    for suffix in ("_mean", "_std"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    for m in METRICS.values():
        if m.pattern.match(base):
            return m
    raise KeyError(f"{name!r} is not a registered metric; known: {sorted(METRICS)}")


def lower_is_better(name: str) -> bool:
    """Whether smaller values of metric ``name`` are better (per :data:`METRICS`; unknown names: False)."""
    try:
        return metric_info(name).direction == "min"
    except KeyError:
        return False


def metric_names(taxonomy, ks: Sequence[int] = (1, 5, 20), neighbors: bool = False) -> list[str]:
    """The concrete keys :func:`evaluate` returns for this taxonomy, ``ks`` and neighbour availability,
    in order (no computation)."""
    ks = [as_k(k, "each of ks") for k in ks]
    out = []
    for m in METRICS.values():
        if m.source != "evaluate" or (m.needs_neighbors and not neighbors):
            continue
        if "{k}" in m.key:
            vals = sorted({1, 5, *ks}) if m.key == "top{k}" else ks
            out += [m.key.replace("{k}", str(k)) for k in vals]
        elif "{l}" in m.key:
            out += [m.key.replace("{l}", str(lv)) for lv in range(1, taxonomy.max_depth + 1)]
        else:
            out.append(m.key)
    return out


# ---------------------------------------------------------------------------------- validation
# one rule per input, shared with every module (semcat_kit._core.contracts)
check_probs = as_probs
check_labels = as_labels
_fmt_rows = fmt_rows
_check_k = as_k
_row_block = row_block


def _neighbor_indices(neighbors, n_classes: int) -> np.ndarray:
    return as_neighbor_indices(neighbors, n_classes)


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
    names = metric_names(taxonomy, ks, neighbors=nb is not None)
    assert set(names) == set(out), (sorted(set(names) ^ set(out)))   # the registry describes every output
    s = pd.Series({k: out[k] for k in names}, dtype=float, name="crm" if crm else "argmax")
    s.attrs["decoding"] = "crm" if crm else "argmax"
    return s


# ---------------------------------------------------------------------------------- hedged decoding
def _pct(p: float) -> str:
    return f"{100 * float(p):.10g}"


def hedging_metric_names(precisions: Sequence[float] = None) -> list[str]:
    """The keys :func:`hedging_metrics` returns for ``precisions`` (default 0.95, 0.98, 0.99), in order."""
    from .hedging import REPORT_PRECISIONS

    precisions = REPORT_PRECISIONS if precisions is None else precisions
    keys = [m.key for m in METRICS.values() if m.source == "hedge"]
    return [k.replace("{p}", _pct(p)) for k in keys for p in precisions]


def hedging_metrics(val_probs, y_val, test_probs, y_test, taxonomy, precisions: Sequence[float] = None, *,
                    method: str = "rcps", delta: float = None, floor: float = None) -> pd.Series:
    """Hedged decoding scores: thresholds calibrated on val for each target precision, read on test.

    For each ``p`` in ``precisions`` (default 0.95, 0.98, 0.99) the threshold rule's lambda is
    calibrated on ``(val_probs, y_val)`` (:func:`semcat_kit.judge.hedging.calibrate_hedging`,
    ``method``/``delta``, its temperature chosen from the default grid) and the test products are hedged at it. Keys (``{p}`` = p in percent):

    - ``leaf_coverage@{p}``: share of test products given a single class;
    - ``specificity@{p}``: mean depth of the hedged node (root 0);
    - ``specificity_bits@{p}``: mean ``log2 C - log2 |classes under the node|``;
    - ``hedged_precision@{p}``: realised precision, ``mean[y under the hedged node]``;
    - ``review@{p}``: share marked ``needs_review``.

    The precision-specificity curve is :func:`precision_specificity_curve`.
    """
    from . import hedging as H

    precisions = H.REPORT_PRECISIONS if precisions is None else tuple(precisions)
    delta = H.DEFAULT_DELTA if delta is None else delta
    floor = H.DEFAULT_FLOOR if floor is None else floor
    cal = H.calibrate_hedging(val_probs, y_val, taxonomy, precisions, method=method, delta=delta, floor=floor)
    tree = H.hedge_tree(taxonomy)
    p_t = check_probs(test_probs, taxonomy.n_classes)
    y_t = check_labels(y_test, p_t.shape[0], taxonomy, name="y_test", against="test_probs")
    r = np.arange(len(y_t))
    out: dict[str, float] = {}
    cols = {}
    paths = {}                                     # temperature -> greedy paths of the tempered probabilities
    for p in precisions:
        T = cal.temperature(p)
        if T not in paths:
            nodes, mass = H.greedy_paths(H.temper(p_t, T), tree)
            paths[T] = nodes, mass, tree.contains(nodes, y_t[:, None])
        nodes, mass, right = paths[T]
        k = (mass[:, 1:] > cal.threshold(p)).sum(axis=1)           # the node is the k-th of the greedy path
        node, prob = nodes[r, k], mass[r, k]
        if T != 1.0:                               # needs_review reads the head's own probability
            prob = H.node_mass(p_t, tree, node)
        cols[p] = {"leaf_coverage": float((node >= tree.n_inner).mean()), "specificity": float(tree.depth[node].mean()),
                   "specificity_bits": float(tree.bits[node].mean()), "hedged_precision": float(right[r, k].mean()),
                   "review": float(((node == 0) | (prob < cal.floor)).mean())}
    for m in METRICS.values():
        if m.source == "hedge":
            for p in precisions:
                out[m.key.replace("{p}", _pct(p))] = cols[p][m.key.split("@")[0]]
    s = pd.Series(out, dtype=float, name="hedged")
    s.attrs["calibration"] = cal
    return s


def precision_specificity_curve(probs, y, taxonomy, thresholds=None, **kw) -> pd.DataFrame:
    """The precision-specificity curve of the hedged decoder (see
    :func:`semcat_kit.judge.hedging.precision_specificity_curve`)."""
    from .hedging import precision_specificity_curve as curve

    return curve(probs, y, taxonomy, thresholds, **kw)


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
