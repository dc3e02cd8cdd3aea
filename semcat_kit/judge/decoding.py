"""Decoding class scores into ranked predictions: top-k with deterministic ties, and CRM.

Shared by :mod:`semcat_kit.judge.metrics` (evaluation) and :mod:`semcat_kit.ship.predictor` (prediction),
so a ranked list means the same thing in a report and in production.

CRM (conditional risk minimisation, Karthik et al., ICLR 2021) re-ranks classes by their expected
tree distance under the model's probabilities:

    cost_k = sum_j p_j d(j, k),   CRM pick = argmin_k cost_k,

with ``d`` the LCA distance of :meth:`semcat_kit.Taxonomy.lca_distance`. Computed exactly in
O(N C depth) from subtree masses (no C x C matrix), or over the top-m classes only.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._core.contracts import as_k, as_probs, fmt_rows, row_block

__all__ = ["topk", "crm_rerank", "crm_predict", "CRM_TIE_DECIMALS", "crm_trust", "CrmTrust", "CRM_MIN_CONFIDENCE",
           "CrmFlagWarning"]

#: CRM expected costs closer than this are ties (broken by higher probability, then lower index).
CRM_TIE_DECIMALS = 9


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
        raise ValueError(f"scores has NaN in rows {fmt_rows(np.flatnonzero(np.isnan(s).any(1)))}")
    N, C = s.shape
    k = min(as_k(k), C)
    if N == 0:
        return np.empty((0, k), dtype=np.int64)
    tb = None if tiebreak is None else np.asarray(tiebreak)
    if tb is not None and tb.shape != s.shape:
        raise ValueError(f"tiebreak has shape {tb.shape}, scores {s.shape}")
    out = np.empty((N, k), dtype=np.int64)
    for a in range(0, N, row_block(C, 2)):
        b = min(N, a + row_block(C, 2))
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




# ---------------------------------------------------------------------------------- CRM
def _tree_operators(taxonomy):
    """Sparse ancestor indicator A (C, V), depth helpers and per-class ancestor columns, kept by
    the taxonomy object (built once, O(C depth): ``Taxonomy.derived``)."""
    return taxonomy.derived("crm_operators", _build_tree_operators)


def _build_tree_operators(taxonomy):
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
    return A, A.T.tocsr(), H, Mx, dpos, anc_cols


def _rowwise_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a small inner dimension (the taxonomy's depths), summed in a fixed order so each
    row's result does not depend on how many rows are passed (a BLAS product may round differently
    for another row count): chunked CRM equals one-shot CRM bit for bit."""
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for d in range(a.shape[1]):
        out += a[:, d:d + 1] * b[d][None, :]
    return out


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
    maxterm = _rowwise_matmul(per_depth, Mx)[:, dpos]             # (N, C) sum_j p_j max(d_j, d_k)
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
    maxterm = np.take_along_axis(_rowwise_matmul(per_depth, Mx), dc, axis=1)   # sum_b q_b max(d_b, d_a)
    return cand, maxterm - shared


def _resolve_top_m(top_m, C: int) -> int | None:
    if top_m is None:
        return None
    return min(as_k(top_m, "top_m"), C)


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
    p = as_probs(probs, C)
    m = _resolve_top_m(top_m, C)
    out = np.full(p.shape, -np.inf)
    step = row_block(C, 4)
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
    p = probs if _checked else as_probs(probs, C)
    k = min(as_k(top_k, "top_k"), C)
    _resolve_top_m(top_m, C)
    idx = np.empty((p.shape[0], k), dtype=np.int64)
    cost = np.empty((p.shape[0], k), dtype=np.float64)
    step = row_block(C, 6)
    for a in range(0, p.shape[0], step):
        block = p[a:a + step]
        scores = crm_rerank(block, taxonomy, top_m=top_m)
        idx[a:a + step] = topk(scores, k, tiebreak=block)
        cost[a:a + step] = -np.take_along_axis(scores, idx[a:a + step], axis=1)
    return idx, cost


# ---------------------------------------------------------------------------------- when CRM is trusted
#: CRM ranks by ``cost_k = sum_j p_j d(j, k)``: with flat probabilities (a starved budget, or classes
#: of one or two products) the cost is lowest at the class nearest to everything, and CRM sends most
#: products there. Below this mean top-1 probability on the validation split, CRM is flagged (not
#: offered by default): measured by ``scripts/measure_crm_rule.py``, table in ``docs/crm_rule.md``.
CRM_MIN_CONFIDENCE = 0.30


class CrmFlagWarning(UserWarning):
    """CRM decoding asked for (a ``+ CRM`` row of :func:`semcat_kit.compare`, ``crm=True`` of a
    Predictor) where the validation probabilities are too flat for it (:func:`crm_trust`)."""


class CrmTrust(NamedTuple):
    """Whether CRM decoding can be trusted on a head's probabilities (:func:`crm_trust`)."""

    ok: bool
    confidence: float
    threshold: float

    @property
    def reason(self) -> str:
        if self.ok:
            return f"mean top-1 probability on the validation split {self.confidence:.3f} >= {self.threshold:g}"
        return (f"mean top-1 probability on the validation split is {self.confidence:.3f} < {self.threshold:g}: the "
                "probabilities are too flat for CRM (it would send most products to the class nearest to "
                "everything); train longer, or on more products per class, before using CRM")


def crm_trust(val_probs, min_confidence: float = CRM_MIN_CONFIDENCE) -> CrmTrust:
    """Is CRM decoding worth offering on these probabilities?

    ``confidence = mean_i max_k p_ik`` over the validation products; CRM is trusted when
    ``confidence >= min_confidence`` (default :data:`CRM_MIN_CONFIDENCE`, measured: below it CRM's
    top-1 fell far below argmax's on every catalog and budget tried, see ``docs/crm_rule.md``).

    Parameters
    ----------
    val_probs : (N, C) array
        Class probabilities of the validation products (rows sum to 1).
    min_confidence : float

    Returns
    -------
    CrmTrust
        ``ok``, ``confidence``, ``threshold``; ``reason`` says it in words. With no validation
        products ``ok`` is True and ``confidence`` NaN (nothing to judge by).
    """
    p = np.asarray(val_probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"val_probs must be (N, C), got shape {p.shape}")
    if not 0 <= float(min_confidence) <= 1:
        raise ValueError(f"min_confidence must lie in [0, 1], not {min_confidence!r}")
    if p.shape[0] == 0:
        return CrmTrust(True, float("nan"), float(min_confidence))
    ok_rows = np.isfinite(p).all(axis=1)
    conf = float(p[ok_rows].max(axis=1).mean()) if ok_rows.any() else float("nan")
    return CrmTrust(bool(not np.isfinite(conf) or conf >= min_confidence), conf, float(min_confidence))
