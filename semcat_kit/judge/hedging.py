"""Hedged decoding: the most specific taxonomy node at a calibrated precision.

Instead of always naming a leaf, a hedged prediction names the most specific node of the taxonomy
that the model is sure enough of ("Footwear > Shoes" rather than a wrong "Footwear > Shoes > Formal
Shoes"); products it cannot place at all go to review. A hedged prediction is **correct** when the
true class lies under the predicted node, and the **precision** of a decoder is the share of
correct predictions. The decision threshold is calibrated on held-out data so that the precision on
new products is at least ``1 - eps`` with a finite-sample guarantee (see :func:`calibrate_hedging`).

Arrays in, arrays out (cleanlab style); the same functions serve evaluation
(:func:`semcat_kit.judge.metrics.hedging_metrics`, :func:`semcat_kit.compare`) and prediction
(:meth:`semcat_kit.Predictor.predict` ``precision=``).

The hedge tree
--------------
Hedged decisions are made on a tree of *hedge nodes* (:func:`hedge_tree`, built once per taxonomy):

* every inner node of the taxonomy (a node with children; the root is hedge node 0): "the true
  class is somewhere in this branch";
* one **leaf** per class (hedge node ``n_inner + c`` for class ``c``): "exactly class c". A class
  that is also an inner node (a shorter path that others extend, as every node of the Google
  taxonomy) has both: the inner node (its whole branch, itself included) and its leaf, a child of
  that inner node.

Node probabilities are sums of class probabilities, ``P(v) = sum_{c under v} p_c``, computed
sparsely: ``M = (probs @ L) @ U`` with ``L`` the (C, n_inner) scipy.sparse matrix sending each
class to its nearest inner node and ``U`` the (n_inner, n_inner) inner-ancestor indicator (their
product ``L @ U`` is the leaf -> ancestor matrix :attr:`HedgeTree.ancestors`). Nothing is C x C;
a block of rows costs one sparse product over the class columns.

Decoding rules
--------------
``rule="threshold"`` (the default): start at the root and step to the most probable child while its
probability exceeds ``lambda``::

    node(lambda) = the last node v_k of the greedy path root = v_0, v_1, ... (v_{i+1} = argmax_{w child
                   of v_i} P(w)) with P(v_k) > lambda   (the root when none)

For ``lambda >= 0.5`` this is exactly "the deepest node whose probability exceeds lambda" (two
disjoint branches cannot both hold more than half the mass). The greedy path does not depend on
``lambda``, so raising ``lambda`` only moves the prediction up towards the root: the loss
``1[true class not under node(lambda)] = 1[t > lambda]``, with ``t`` the probability of the first
node of the path that does not contain the true class (:func:`hedge_scores`), is non-increasing
and right-continuous in lambda -- the monotonicity the risk-control guarantees need.

``rule="info_gain"`` (Deng et al., "Hedging your bets", CVPR 2012, DARTS): pick
``argmax_v (r(v) + lambda) P(v)`` over all hedge nodes, with ``r(v) = log2 C - log2 |classes under
v|`` the information gain of v in bits. Its loss is not monotone in lambda for a single product,
so it is calibrated by Learn-then-Test fixed-sequence testing only (``method="rcps"``).

Measured choice (``scripts/measure_hedging_rule.py``; TF-IDF + LogisticRegression heads on Myntra and
the Amazon toys, 20 random calibration/test splits each, RCPS ``delta = 0.1``; table in
``docs/hedging.md``): at the same realised precision the threshold rule gives a leaf to more
products at every target (Myntra 0.82 vs 0.68 at 98 %, toys 0.25 vs 0.22) and deeper nodes on
average; information gain gets slightly more bits on Myntra only. The threshold rule is also
monotone (so the exact conformal risk control applies) and reads one scalar per product: it is
the default; ``info_gain`` is kept for comparison.

Calibration and its guarantee
-----------------------------
:func:`calibrate_hedging` picks lambda on ``n`` held-out products from their scores ``t``: with
``k(lambda) = #{i : t_i > lambda}`` (the calibration errors), ``lambda_hat = inf{lambda : k(lambda) <= K}``.

* ``method="rcps"`` (default; Bates et al., JACM 2021 = Learn-then-Test with fixed-sequence testing,
  Angelopoulos et al. 2021): ``K = max{k : P(Binomial(n, eps) <= k) <= delta}``. Guarantee: **with
  probability >= 1 - delta over the calibration draw, P(true class under the hedged node) >= 1 - eps**
  for a new product exchangeable with the calibration ones (exact binomial test of ``risk > eps``,
  valid without multiplicity correction because the loss is monotone in lambda).
* ``method="crc"`` (Angelopoulos et al., "Conformal risk control", 2022): ``K = floor(eps (n+1) - 1)``,
  i.e. ``lambda_hat = inf{lambda : (n/(n+1)) R_hat(lambda) + B/(n+1) <= eps}`` with ``B = 1`` for the
  bounded, non-increasing, right-continuous loss ``1[t > lambda]``. Guarantee: **E[1 - precision]
  <= eps** in expectation over calibration and test draws.

Temperatures (Learn-then-Test over a grid)
-------------------------------------------
Soft-label heads spread a product's mass over the neighbours of its class on purpose, so their
top-1 probability saturates (median of a right top-1 on toys 0.78 against 0.85 for one-hot, on full
Myntra 0.95 against 0.99: the hedging readings of docs/results.md): few products
clear the high lambda a 98 % guarantee needs, although their ranking is as good. The decoder may
therefore read **tempered** probabilities ``q_c = p_c^(1/T) / sum_k p_k^(1/T)`` (:func:`temper`;
``T < 1`` sharpens, the greedy path and the top-1 are unchanged at the first level but the masses
move down the tree). With ``method="rcps"`` :func:`calibrate_hedging` calibrates one lambda per
temperature of a fixed grid (:data:`DEFAULT_TEMPERATURES`), each at ``delta / K`` for a grid of
``K`` (Bonferroni), and keeps, per target, the temperature whose lambda gives a leaf to the most
calibration products. The guarantee holds for every (T, lambda) pair at once with probability
>= 1 - delta, so it holds for the one chosen (Angelopoulos et al., "Learn then Test", 2021). CRC's
guarantee is in expectation and does not survive a data-driven choice: it uses ``T = 1`` only.
The reported node probability and the ``floor`` of ``needs_review`` stay the model's own (untempered).

Too few calibration products for a target (``n < log(delta)/log(1 - eps)`` for RCPS, ``n < 1/eps - 1``
for CRC) give ``lambda = 1``: the root, always right, for every product (:class:`CalibrationWarning`).

A product whose hedged node is the root, or whose node probability is below ``floor``, is marked
``needs_review``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core.contracts import as_labels, as_probs, row_block

__all__ = ["HedgeTree", "hedge_tree", "node_probabilities", "hedge_paths", "hedge", "HedgedPredictions",
           "hedge_scores", "hedged_correct", "calibrate_hedging", "HedgeCalibration", "calibrated_threshold",
           "precision_specificity_curve", "RULES", "METHODS", "DEFAULT_PRECISIONS", "REPORT_PRECISIONS",
           "DEFAULT_DELTA", "DEFAULT_FLOOR", "DEFAULT_TEMPERATURES", "temper", "node_mass", "CalibrationWarning"]

#: Decoding rules: greedy descent while ``P > lambda``; Deng et al.'s maximal ``(r + lambda) P``.
RULES = ("threshold", "info_gain")
#: Calibration procedures: Bates et al.'s RCPS (high probability) and Angelopoulos et al.'s CRC (in expectation).
METHODS = ("rcps", "crc")
#: Target precisions an export calibrates by default (``Predictor.predict(precision=...)`` picks one).
DEFAULT_PRECISIONS = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
#: Target precisions of the metric columns (``leaf_coverage@95`` ...).
REPORT_PRECISIONS = (0.95, 0.98, 0.99)
#: Default ``delta`` of RCPS: the guarantee holds for at least 90 % of calibration draws.
DEFAULT_DELTA = 0.1
#: Default probability floor below which a hedged product is marked ``needs_review``.
DEFAULT_FLOOR = 0.5
#: Temperatures RCPS calibration chooses from, per target (Learn-then-Test, ``delta / K`` each). Measured
#: per configuration in docs/hedging_temperature.md (scripts/measure_hedging_temperature.py): tutorial
#: ``top-20 semantic`` 0.513 -> 0.580 of products given a leaf at 98 %, one-hot 0.427 -> 0.372 (the
#: Bonferroni cost on 323 calibration products).
DEFAULT_TEMPERATURES = (1.0, 0.7, 0.5, 0.35, 0.25)
#: Grid of lambda for the info-gain rule (fixed-sequence testing from the largest value down).
_INFO_GAIN_GRID = np.concatenate([[np.inf], np.geomspace(1e4, 1e-3, 120), [0.0]])


class CalibrationWarning(UserWarning):
    """The calibration set is too small for a target precision: every product gets the root."""


# ---------------------------------------------------------------------------------- the tree
@dataclass(eq=False)
class HedgeTree:
    """The hedge nodes of a taxonomy (see the module docstring) as arrays.

    Hedge node ``h < n_inner`` is the inner taxonomy node ``inner_nodes[h]`` (``h = 0`` the root),
    ordered by depth; ``h = n_inner + c`` is the leaf of class ``c``.

    Attributes
    ----------
    n_inner, n_classes : int
    inner_nodes : ndarray (n_inner,)
        Taxonomy node id of each inner hedge node.
    parent : ndarray (H,)
        Hedge parent of each hedge node (-1 for the root).
    depth : ndarray (H,)
        Number of path segments (0 for the root; a class leaf has its class's depth).
    n_under : ndarray (H,)
        Classes under each node (1 for a leaf).
    bits : ndarray (H,)
        Information ``log2 C - log2 n_under`` in bits (0 for the root, ``log2 C`` for a leaf).
    to_inner : scipy.sparse.csr_matrix (C, n_inner)
        ``L``: class -> its nearest inner node (its own for a class that is an inner node).
    up : scipy.sparse.csr_matrix (n_inner, n_inner)
        ``U``: inner node -> its inner ancestors and itself.
    child_ptr, child_idx : ndarray
        CSR list of the hedge children of each inner hedge node, in ascending order.
    runs, run_up : ndarray, scipy.sparse.csr_matrix or None
        When the classes come in long runs that share their nearest inner node (catalog taxonomies
        are sorted by path; the Google file nearly so), the starts of those runs and the (n_runs,
        n_inner) operator ``run -> inner ancestors``: ``probs @ L @ U`` is then computed as
        ``np.add.reduceat(probs, runs, axis=1) @ run_up`` (the same sums, without scipy's transposed
        copy of the (n, C) block).
    """

    taxonomy: object
    n_inner: int
    n_classes: int
    inner_nodes: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    n_under: np.ndarray
    bits: np.ndarray
    to_inner: sp.csr_matrix
    up: sp.csr_matrix
    child_ptr: np.ndarray
    child_idx: np.ndarray
    runs: np.ndarray | None
    run_up: sp.csr_matrix | None
    _inner_anc: np.ndarray = field(repr=False)      # (C, max_depth + 1) inner hedge id of each class's ancestors
    _paths: list | None = field(default=None, repr=False)
    _index: dict | None = field(default=None, repr=False)

    @property
    def n_nodes(self) -> int:
        """Number of hedge nodes ``H = n_inner + C``."""
        return self.n_inner + self.n_classes

    @property
    def work_cols(self) -> int:
        """Columns of the temporaries per row of a decoded block (sizes the row blocks): the segment
        sums (or scipy's transposed copy of the block), the inner masses and the widest child list."""
        first = len(self.runs) if self.runs is not None else self.n_classes
        return first + self.n_inner + int(np.diff(self.child_ptr).max(initial=1))

    @property
    def ancestors(self) -> sp.csr_matrix:
        """(C, n_inner) leaf -> ancestor indicator ``L @ U``: ``node_probabilities = probs @ ancestors``."""
        return (self.to_inner @ self.up).tocsr()

    @property
    def paths(self) -> list[str]:
        """Full path of every hedge node (``""`` for the root; a leaf has its class's path)."""
        if self._paths is None:
            tax = self.taxonomy
            self._paths = [tax.sep.join(tax.node_paths[v]) for v in self.inner_nodes] + list(tax.classes)
        return self._paths

    def ids(self, paths, is_leaf) -> np.ndarray:
        """Hedge ids of nodes given by full path (``""`` the root) and whether each is a class leaf
        (a path that is both a class and an inner node names two hedge nodes); -1 for None.

        Raises ``KeyError`` naming a path that is not such a node."""
        if self._index is None:
            self._index = {(p, h >= self.n_inner): h for h, p in enumerate(self.paths)}
        out = np.empty(len(paths), dtype=np.int64)
        for k, (p, leaf) in enumerate(zip(paths, is_leaf)):
            if p is None or (isinstance(p, float) and np.isnan(p)):
                out[k] = -1
                continue
            h = self._index.get((str(p), bool(leaf)))
            if h is None:
                kind = "class" if leaf else "inner node"
                raise KeyError(f"row {k}: {p!r} is not a{'n' if kind[0] == 'i' else ''} {kind} of this taxonomy")
            out[k] = h
        return out

    def is_leaf(self, h) -> np.ndarray:
        """Whether hedge nodes ``h`` are class leaves (a single class)."""
        return np.asarray(h) >= self.n_inner

    def class_of(self, h) -> np.ndarray:
        """Class index of leaf hedge nodes (-1 for inner nodes)."""
        h = np.asarray(h)
        return np.where(h >= self.n_inner, h - self.n_inner, -1)

    def contains(self, h, y) -> np.ndarray:
        """Whether class ``y`` lies under hedge node ``h`` (broadcast arrays; ``h = -1`` counts as True)."""
        h, y = np.broadcast_arrays(np.asarray(h, dtype=np.int64), np.asarray(y, dtype=np.int64))
        leaf = h >= self.n_inner
        d = self.depth[np.clip(h, 0, self.n_nodes - 1)]
        inner_hit = self._inner_anc[y, np.minimum(d, self._inner_anc.shape[1] - 1)] == h
        return np.where(h < 0, True, np.where(leaf, h - self.n_inner == y, inner_hit))


def hedge_tree(taxonomy) -> HedgeTree:
    """The :class:`HedgeTree` of a taxonomy (built once in O(C depth), kept by the taxonomy object:
    ``Taxonomy.derived``)."""
    return taxonomy.derived("hedge_tree", _build_hedge_tree)


def _build_hedge_tree(taxonomy) -> HedgeTree:
    node_parent = np.asarray(taxonomy.node_parent, dtype=np.int64)
    node_depth = np.asarray(taxonomy.node_depth, dtype=np.int64)
    V, C = len(node_parent), taxonomy.n_classes
    class_nodes = np.asarray(taxonomy.class_nodes, dtype=np.int64)
    has_child = np.zeros(V, dtype=bool)
    has_child[node_parent[node_parent >= 0]] = True
    has_child[0] = True
    inner_nodes = np.flatnonzero(has_child)
    inner_nodes = inner_nodes[np.lexsort((inner_nodes, node_depth[inner_nodes]))]   # by depth; root first
    n_inner = len(inner_nodes)
    slot_of = np.full(V, -1, dtype=np.int64)
    slot_of[inner_nodes] = np.arange(n_inner)
    own = slot_of[class_nodes]
    slot = np.where(own >= 0, own, slot_of[node_parent[class_nodes]])              # nearest inner node
    to_inner = sp.csr_matrix((np.ones(C), (np.arange(C), slot)), shape=(C, n_inner))
    # node ancestors by depth (rows: taxonomy nodes), restricted to the inner ones
    anc = np.full((V, taxonomy.max_depth + 1), -1, dtype=np.int64)
    for v in np.argsort(node_depth, kind="stable"):
        p = node_parent[v]
        if p >= 0:
            anc[v] = anc[p]
        anc[v, node_depth[v]] = v
    ia = anc[inner_nodes]
    r, c = np.nonzero(ia >= 0)
    up = sp.csr_matrix((np.ones(len(r)), (r, slot_of[ia[r, c]])), shape=(n_inner, n_inner))
    inner_anc = np.where(anc[class_nodes] >= 0, slot_of[np.maximum(anc[class_nodes], 0)], -1)
    # hedge parents, depths, sizes
    parent = np.concatenate([np.where(np.arange(n_inner) == 0, -1, slot_of[np.maximum(node_parent[inner_nodes], 0)]),
                             slot])
    depth = np.concatenate([node_depth[inner_nodes], node_depth[class_nodes]])
    n_under = np.concatenate([np.asarray((to_inner @ up).sum(axis=0)).ravel().astype(np.int64),
                              np.ones(C, dtype=np.int64)])
    bits = np.log2(C) - np.log2(n_under)
    # decision children of every inner hedge node, ascending hedge ids
    kids = parent[1:]
    order = np.argsort(kids, kind="stable")
    child_idx = (np.arange(1, n_inner + C))[order]
    child_ptr = np.concatenate([[0], np.cumsum(np.bincount(kids, minlength=n_inner))])
    runs = np.flatnonzero(np.concatenate([[True], slot[1:] != slot[:-1]]))
    run_up = None
    if len(runs) <= C // 2:
        run_up = (sp.csr_matrix((np.ones(len(runs)), (np.arange(len(runs)), slot[runs])),
                                shape=(len(runs), n_inner)) @ up).tocsr()
    else:
        runs = None
    tree = HedgeTree(taxonomy, n_inner, C, inner_nodes, parent, depth, n_under, bits, to_inner, up,
                     child_ptr, child_idx, runs, run_up, inner_anc)
    return tree


# ---------------------------------------------------------------------------------- probabilities
def _inner_mass(p: np.ndarray, tree: HedgeTree) -> np.ndarray:
    """(n, n_inner) float64 probability of every inner hedge node: ``(p @ L) @ U``."""
    if len(p) == 0:
        return np.zeros((0, tree.n_inner))
    if tree.runs is not None:
        return np.asarray(np.add.reduceat(p, tree.runs, axis=1), dtype=np.float64) @ tree.run_up
    return np.asarray((p @ tree.to_inner.astype(p.dtype, copy=False)), dtype=np.float64) @ tree.up


def node_probabilities(probs, taxonomy) -> np.ndarray:
    """Probability of every hedge node: ``P(v) = sum_{c under v} p_c``.

    Parameters
    ----------
    probs : array (N, C)
    taxonomy : Taxonomy

    Returns
    -------
    numpy.ndarray (N, H) float64
        Columns ``0 .. n_inner - 1``: the inner nodes (column 0 the root, ~1); columns
        ``n_inner + c``: class ``c`` (``probs`` itself). Names: ``hedge_tree(taxonomy).paths``.
        Dense in N x H (use it for a block of rows); the tree itself is sparse.
    """
    tree = hedge_tree(taxonomy)
    p = as_probs(probs, tree.n_classes)
    out = np.empty((p.shape[0], tree.n_nodes))
    step = row_block(tree.n_classes, 2)
    for a in range(0, p.shape[0], step):
        out[a:a + step, :tree.n_inner] = _inner_mass(p[a:a + step], tree)
        out[a:a + step, tree.n_inner:] = p[a:a + step]
    return out


def temper(probs, temperature: float) -> np.ndarray:
    """Tempered probabilities ``q_c = p_c^(1/T) / sum_k p_k^(1/T)`` (``softmax(log p / T)``).

    ``T < 1`` sharpens, ``T > 1`` flattens, ``T = 1`` returns ``probs`` itself; the order of the
    classes in a row never changes, zeros stay zero. Used by hedged decoding at a calibrated
    temperature (:func:`calibrate_hedging`).

    Parameters
    ----------
    probs : array (N, C)
    temperature : float
        ``T > 0``.

    Returns
    -------
    numpy.ndarray (N, C), the dtype of ``probs`` (float32 or float64)
    """
    T = _check_temperature(temperature)
    p = np.asarray(probs)
    if T == 1.0:
        return p
    dt = p.dtype if p.dtype in (np.float32, np.float64) else np.float64
    out = np.empty(p.shape, dtype=dt)
    step = row_block(max(p.shape[-1], 1), 2)
    with np.errstate(divide="ignore"):
        for a in range(0, len(p), step):
            z = np.log(p[a:a + step].astype(dt, copy=False)) / dt.type(T)
            z -= z.max(axis=-1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=-1, keepdims=True)
            out[a:a + step] = z
    return out


def _check_temperature(t) -> float:
    try:
        v = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number > 0, not {t!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"temperature must be a finite number > 0, not {t!r}")
    return v


def _paths_block(p: np.ndarray, tree: HedgeTree) -> tuple[np.ndarray, np.ndarray]:
    """Greedy most-probable-child path of each row: hedge ids and probabilities, padded with -1."""
    n = p.shape[0]
    L = int(tree.depth.max()) + 2 if tree.n_nodes else 1
    nodes = np.full((n, L), -1, dtype=np.int64)
    mass = np.full((n, L), -1.0)
    nodes[:, 0] = 0
    mass[:, 0] = 1.0
    if n == 0:
        return nodes, mass
    M = _inner_mass(p, tree)
    cur = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    count = np.diff(tree.child_ptr)
    for step in range(1, L):
        act = rows[cur < tree.n_inner]
        if not len(act):
            break
        c = cur[act]
        width = int(count[c].max())
        off = np.arange(width)
        valid = off[None, :] < count[c][:, None]
        h = tree.child_idx[np.where(valid, tree.child_ptr[c][:, None] + off[None, :], 0)]
        inner = h < tree.n_inner
        m = np.where(inner, M[act[:, None], np.where(inner, h, 0)],
                     p[act[:, None], np.where(inner, 0, h - tree.n_inner)])
        m = np.where(valid, m, -np.inf)
        j = np.argmax(m, axis=1)                                  # ties: the lower hedge id
        nxt = h[np.arange(len(act)), j]
        nodes[act, step] = nxt
        mass[act, step] = m[np.arange(len(act)), j]
        cur[act] = nxt
    # masses along the path never increase (a child is part of its parent); make it exact in floats
    valid = nodes >= 0
    mass = np.where(valid, np.minimum.accumulate(np.minimum(np.where(valid, mass, np.inf), 1.0), axis=1), -1.0)
    return nodes, mass


def hedge_paths(probs, taxonomy) -> tuple[np.ndarray, np.ndarray]:
    """The greedy path of each product: root, its most probable child, that node's, ... to a leaf.

    Returns
    -------
    nodes : numpy.ndarray (N, L) int64
        Hedge node ids (:func:`hedge_tree`), -1 after the leaf.
    probs : numpy.ndarray (N, L) float64
        Their probabilities, non-increasing along each row (1 for the root, -1 after the leaf).
    """
    tree = hedge_tree(taxonomy)
    p = as_probs(probs, tree.n_classes)
    return greedy_paths(p, tree)


def greedy_paths(p: np.ndarray, tree: HedgeTree) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hedge_paths` on probabilities already validated (``as_probs``) and the taxonomy's
    :class:`HedgeTree`, in blocks of rows (memory bounded by a block)."""
    step = row_block(tree.work_cols, 3)
    if p.shape[0] <= step:
        return _paths_block(p, tree)
    parts = [_paths_block(p[a:a + step], tree) for a in range(0, p.shape[0], step)]
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


# ---------------------------------------------------------------------------------- decoding
@dataclass
class HedgedPredictions:
    """Hedged predictions of N products (arrays aligned with the rows).

    Attributes
    ----------
    node : ndarray (N,) int64
        Hedge node id (:func:`hedge_tree`; 0 is the root).
    prob : ndarray (N,) float64
        Its probability ``P(node)``.
    depth : ndarray (N,) int64
        Its depth (0 for the root).
    bits : ndarray (N,) float64
        Its information ``log2 C - log2 |classes under it|``.
    is_leaf : ndarray (N,) bool
        A single class (the most specific answer).
    needs_review : ndarray (N,) bool
        The root, or ``prob < floor``.
    tree : HedgeTree
    """

    node: np.ndarray
    prob: np.ndarray
    depth: np.ndarray
    bits: np.ndarray
    is_leaf: np.ndarray
    needs_review: np.ndarray
    tree: HedgeTree = field(repr=False)

    def __len__(self) -> int:
        return len(self.node)

    @property
    def class_index(self) -> np.ndarray:
        """Class index of leaf predictions, -1 for inner nodes."""
        return self.tree.class_of(self.node)

    @property
    def path(self) -> np.ndarray:
        """Full path of each predicted node (``""`` for the root), an object array."""
        return np.asarray(self.tree.paths, dtype=object)[self.node] if len(self.node) else np.array([], dtype=object)

    def correct(self, y) -> np.ndarray:
        """Whether the true class ``y`` lies under each predicted node."""
        return self.tree.contains(self.node, as_labels(y, len(self.node), self.tree.taxonomy, name="y"))

    def frame(self) -> pd.DataFrame:
        """``node, node_depth, node_prob, is_leaf, needs_review`` (the columns of ``Predictor.predict``)."""
        return pd.DataFrame({"node": self.path, "node_depth": self.depth, "node_prob": self.prob,
                             "is_leaf": self.is_leaf, "needs_review": self.needs_review})


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    return rule


def _check_unit(x, name: str, lo_open: bool = False, hi_open: bool = False) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {x!r}") from None
    if not np.isfinite(v) or v < 0 or v > 1 or (lo_open and v == 0) or (hi_open and v == 1):
        rng = f"{'(' if lo_open else '['}0, 1{')' if hi_open else ']'}"
        raise ValueError(f"{name} must lie in {rng}, not {x!r}")
    return v


def _decide_threshold(nodes: np.ndarray, mass: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    k = (mass[:, 1:] > lam).sum(axis=1)
    r = np.arange(len(nodes))
    return nodes[r, k], mass[r, k]


def _decide_info_gain(p: np.ndarray, tree: HedgeTree, lams: np.ndarray) -> np.ndarray:
    """(n, len(lams)) hedge ids maximising ``(r(v) + lambda) P(v)`` (ties: the lower hedge id, inner nodes
    before leaves); ``lambda = inf`` is the limit, the root (for every product whose top node has P < 1,
    and by convention for all)."""
    M = _inner_mass(p, tree)
    n = len(p)
    top = np.argmax(p, axis=1)
    ptop = p[np.arange(n), top].astype(np.float64)
    leaf_bits = math.log2(tree.n_classes) if tree.n_classes > 1 else 0.0
    out = np.empty((n, len(lams)), dtype=np.int64)
    bits = tree.bits[:tree.n_inner]
    for g, lam in enumerate(lams):
        if np.isinf(lam):
            out[:, g] = 0
            continue
        s_in, s_leaf = (bits + lam) * M, (leaf_bits + lam) * ptop
        j = np.argmax(s_in, axis=1)
        best_in = s_in[np.arange(n), j]
        out[:, g] = np.where(s_leaf > best_in, tree.n_inner + top, j)
    return out


def hedge(probs, taxonomy, threshold: float, *, rule: str = "threshold",
          floor: float = DEFAULT_FLOOR, temperature: float = 1.0) -> HedgedPredictions:
    """Hedged predictions at a given ``threshold`` (lambda), calibrated or not.

    Parameters
    ----------
    probs : array (N, C)
    taxonomy : Taxonomy
    threshold : float
        ``lambda``: in [0, 1] for ``rule="threshold"`` (a node is taken while its probability
        exceeds it; 1 gives the root everywhere); >= 0 for ``"info_gain"`` (``inf``: the root
        everywhere). Get a calibrated one from :func:`calibrate_hedging`.
    rule : {"threshold", "info_gain"}
        See the module docstring.
    floor : float
        ``needs_review`` when the node's probability is below it (or the node is the root).
    temperature : float
        Decide on :func:`temper` ``(probs, temperature)`` (the calibrated one:
        :meth:`HedgeCalibration.temperature`); ``prob`` and ``floor`` use ``probs`` themselves.

    Returns
    -------
    HedgedPredictions
    """
    tree = hedge_tree(taxonomy)
    p = as_probs(probs, tree.n_classes, allow_empty=True)
    rule = _check_rule(rule)
    floor = _check_unit(floor, "floor")
    T = _check_temperature(temperature)
    if rule == "threshold":
        lam = _check_unit(threshold, "threshold")
    else:
        lam = float(threshold)
        if not lam >= 0:
            raise ValueError(f"threshold (lambda) of the info_gain rule must be >= 0, not {threshold!r}")
    n = p.shape[0]
    node = np.zeros(n, dtype=np.int64)
    prob = np.ones(n)
    step = row_block(tree.work_cols, 3)
    for a in range(0, n, step):
        block = p[a:a + step]
        q = temper(block, T)
        if rule == "threshold":
            nodes, mass = _paths_block(q, tree)
            node[a:a + step], prob[a:a + step] = _decide_threshold(nodes, mass, lam)
        else:
            node[a:a + step] = _decide_info_gain(q, tree, np.array([lam]))[:, 0]
        if rule != "threshold" or T != 1.0:
            prob[a:a + step] = node_mass(block, tree, node[a:a + step])
    return _predictions(node, prob, tree, floor)


def node_mass(p: np.ndarray, tree: HedgeTree, h: np.ndarray) -> np.ndarray:
    """``P(h_i)`` of one hedge node per row: ``p`` validated (N, C) probabilities, ``tree`` the
    :func:`hedge_tree`, ``h`` (N,) hedge ids; 1 for the root."""
    inner = h < tree.n_inner
    out = np.empty(len(h))
    r = np.arange(len(h))
    if inner.any():
        out[inner] = _inner_mass(p[inner], tree)[np.arange(int(inner.sum())), h[inner]]
    out[~inner] = p[r[~inner], h[~inner] - tree.n_inner]
    out[h == 0] = 1.0
    return np.minimum(out, 1.0)


def _predictions(node: np.ndarray, prob: np.ndarray, tree: HedgeTree, floor: float) -> HedgedPredictions:
    return HedgedPredictions(node=node, prob=prob, depth=tree.depth[node], bits=tree.bits[node],
                             is_leaf=node >= tree.n_inner, needs_review=(node == 0) | (prob < floor), tree=tree)


def hedged_correct(nodes, y, taxonomy) -> np.ndarray:
    """Whether each true class ``y`` lies under the hedged node.

    ``nodes``: hedge ids (``HedgedPredictions.node``), or a ``Predictor.predict(..., precision=)`` frame
    (its ``node`` and ``is_leaf`` columns; a product with nothing usable counts as wrong).
    """
    tree = hedge_tree(taxonomy)
    if isinstance(nodes, pd.DataFrame):
        missing = [c for c in ("node", "is_leaf") if c not in nodes.columns]
        if missing:
            raise ValueError(f"the predictions have no {missing} column(s): predict with precision=... first")
        y = as_labels(y, len(nodes), taxonomy, name="y", against="predictions")
        ids = tree.ids(nodes["node"].tolist(), nodes["is_leaf"].to_numpy(dtype=bool))
        return (ids >= 0) & tree.contains(np.maximum(ids, 0), y)
    nodes = np.asarray(nodes, dtype=np.int64)
    y = as_labels(y, len(nodes), taxonomy, name="y")
    if len(nodes) and (nodes.min() < 0 or nodes.max() >= tree.n_nodes):
        raise ValueError(f"nodes must be hedge node ids in [0, {tree.n_nodes})")
    return tree.contains(nodes, y)


# ---------------------------------------------------------------------------------- calibration
def hedge_scores(probs, y, taxonomy) -> np.ndarray:
    """Calibration score ``t`` of each product for the threshold rule.

    ``t`` is the probability of the first node of the greedy path that does not contain the true
    class (-1 when the whole path to the leaf is right). The hedged prediction at ``lambda`` is wrong
    exactly when ``t > lambda``.
    """
    tree = hedge_tree(taxonomy)
    p = as_probs(probs, tree.n_classes)
    y = as_labels(y, p.shape[0], taxonomy, name="y")
    nodes, mass = greedy_paths(p, tree)
    wrong = ~tree.contains(nodes, y[:, None])
    return np.where(wrong, mass, -1.0).max(axis=1)


def _max_errors(n: int, eps: float, method: str, delta: float) -> int:
    """Largest error count k among n calibration products that still certifies risk <= eps
    (-1: none does, even 0 errors)."""
    if method == "crc":
        # (n/(n+1)) k/n + 1/(n+1) <= eps  <=>  k <= eps (n + 1) - 1
        return int(math.floor(eps * (n + 1) - 1 + 1e-12))
    from scipy.stats import binom

    ks = np.arange(n + 1)
    ok = np.flatnonzero(binom.cdf(ks, n, eps) <= delta)     # exact binomial (Clopper-Pearson) test
    return int(ok.max()) if len(ok) else -1


def _min_calibration_size(eps: float, method: str, delta: float) -> int:
    if method == "crc":
        return int(math.ceil(1 / eps - 1 - 1e-9))
    return int(math.ceil(math.log(delta) / math.log1p(-eps) - 1e-9))


@dataclass
class HedgeCalibration:
    """Thresholds calibrated for target precisions (from :func:`calibrate_hedging`).

    Attributes
    ----------
    thresholds : dict[float, float]
        Target precision ``1 - eps`` -> ``lambda``.
    rule, method : str
    delta : float
        RCPS failure probability (unused by CRC).
    floor : float
        Probability floor of ``needs_review``.
    n : int
        Calibration products.
    val_precision, val_leaf_coverage : dict[float, float]
        Precision and share of leaves on the calibration products at each threshold.
    temperatures : dict[float, float]
        Target precision -> the temperature its lambda applies to (:func:`temper`; 1 when absent).
    temperature_grid : tuple of float
        The temperatures the calibration chose from (``delta`` was split evenly over them).
    """

    thresholds: dict
    rule: str = "threshold"
    method: str = "rcps"
    delta: float = DEFAULT_DELTA
    floor: float = DEFAULT_FLOOR
    n: int = 0
    val_precision: dict = field(default_factory=dict)
    val_leaf_coverage: dict = field(default_factory=dict)
    temperatures: dict = field(default_factory=dict)
    temperature_grid: tuple = (1.0,)

    @property
    def precisions(self) -> list[float]:
        return sorted(self.thresholds)

    def _key(self, precision: float) -> float:
        p = _check_unit(precision, "precision", lo_open=True, hi_open=True)
        for k in self.thresholds:
            if abs(k - p) < 1e-9:
                return k
        raise ValueError(f"no threshold was calibrated for precision={precision!r}; calibrated: "
                         f"{self.precisions} (re-calibrate with calibrate_hedging(..., precisions=[{precision}]))")

    def threshold(self, precision: float) -> float:
        """The lambda calibrated for ``precision`` (raises naming the calibrated ones)."""
        return self.thresholds[self._key(precision)]

    def temperature(self, precision: float) -> float:
        """The temperature ``precision``'s lambda applies to (1: the head's own probabilities)."""
        return float(self.temperatures.get(self._key(precision), 1.0))

    def predict(self, probs, taxonomy, precision: float) -> HedgedPredictions:
        """:func:`hedge` at the threshold (and temperature) calibrated for ``precision``."""
        return hedge(probs, taxonomy, self.threshold(precision), rule=self.rule, floor=self.floor,
                     temperature=self.temperature(precision))

    def guarantee(self, precision: float) -> str:
        """The guarantee of ``precision``'s threshold, in words."""
        eps = 1 - float(precision)
        if self.method == "crc":
            return (f"on average over calibration draws, P(true class under the hedged node) >= {1 - eps:g} "
                    f"(conformal risk control, n = {self.n})")
        ts, _ = _plan(self.n, float(precision), self.method, self.delta, tuple(self.temperature_grid))
        k = len(ts)
        over = f", over {k} temperatures at delta/{k} each" if k > 1 else ""
        return (f"with probability >= {1 - self.delta:g} over the calibration draw, P(true class under the hedged "
                f"node) >= {1 - eps:g} (RCPS/Learn-then-Test, exact binomial bound{over}, n = {self.n})")

    def table(self) -> pd.DataFrame:
        """One row per precision: ``threshold``, ``temperature``, ``val_precision``, ``val_leaf_coverage``."""
        ps = self.precisions
        return pd.DataFrame({"precision": ps, "threshold": [self.thresholds[p] for p in ps],
                             "temperature": [float(self.temperatures.get(p, 1.0)) for p in ps],
                             "val_precision": [self.val_precision.get(p, np.nan) for p in ps],
                             "val_leaf_coverage": [self.val_leaf_coverage.get(p, np.nan) for p in ps]})

    def to_dict(self) -> dict:
        """JSON-serialisable form (``inf`` thresholds of ``info_gain`` as the string ``"inf"``)."""
        enc = (lambda v: "inf" if np.isinf(v) else float(v))
        return {"rule": self.rule, "method": self.method, "delta": float(self.delta), "floor": float(self.floor),
                "n_calibration": int(self.n), "temperature_grid": [float(t) for t in self.temperature_grid],
                "thresholds": [{"precision": float(p), "threshold": enc(self.thresholds[p]),
                                "temperature": float(self.temperatures.get(p, 1.0)),
                                "val_precision": _num(self.val_precision.get(p)),
                                "val_leaf_coverage": _num(self.val_leaf_coverage.get(p))} for p in self.precisions]}

    @classmethod
    def from_dict(cls, d: dict, where: str = "hedging") -> "HedgeCalibration":
        """Rebuild from :meth:`to_dict`; raises ``ValueError`` naming the malformed key."""
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be an object with 'thresholds', not {type(d).__name__}")
        rule, method = d.get("rule", "threshold"), d.get("method", "rcps")
        if rule not in RULES:
            raise ValueError(f"{where}.rule must be one of {RULES}, not {rule!r}")
        if method not in METHODS:
            raise ValueError(f"{where}.method must be one of {METHODS}, not {method!r}")
        rows = d.get("thresholds")
        if not isinstance(rows, list) or not rows:
            raise ValueError(f"{where}.thresholds must be a non-empty list of {{precision, threshold}} objects")
        th, vp, vl, tt = {}, {}, {}, {}
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or "precision" not in r or "threshold" not in r:
                raise ValueError(f"{where}.thresholds[{i}] must be an object with 'precision' and 'threshold'")
            try:
                p = _check_unit(r["precision"], f"{where}.thresholds[{i}].precision", lo_open=True, hi_open=True)
                t = float("inf") if r["threshold"] == "inf" else float(r["threshold"])
            except (TypeError, ValueError) as e:
                raise ValueError(str(e) if "must" in str(e) else
                                 f"{where}.thresholds[{i}].threshold must be a number, not {r['threshold']!r}") from None
            if np.isnan(t) or t < 0 or (rule == "threshold" and t > 1):
                raise ValueError(f"{where}.thresholds[{i}].threshold {r['threshold']!r} is out of range for rule {rule!r}")
            th[p] = t
            try:     # exports written before temperatures: the head's own probabilities
                tt[p] = _check_temperature(r.get("temperature", 1.0))
            except ValueError as e:
                raise ValueError(f"{where}.thresholds[{i}].{e}") from None
            if r.get("val_precision") is not None:
                vp[p] = float(r["val_precision"])
            if r.get("val_leaf_coverage") is not None:
                vl[p] = float(r["val_leaf_coverage"])
        try:
            delta = _check_unit(d.get("delta", DEFAULT_DELTA), f"{where}.delta", lo_open=True, hi_open=True)
            floor = _check_unit(d.get("floor", DEFAULT_FLOOR), f"{where}.floor")
            n = int(d.get("n_calibration", 0))
        except (TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
        try:
            grid = tuple(_check_temperature(t) for t in d.get("temperature_grid", [1.0]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}.temperature_grid: {e}") from None
        return cls(th, rule, method, delta, floor, n, vp, vl, tt, grid or (1.0,))


def _num(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def calibrated_threshold(scores, precision: float, method: str = "rcps", delta: float = DEFAULT_DELTA,
                         warn: bool = True) -> float:
    """The threshold rule's lambda for target ``precision = 1 - eps`` from calibration scores
    ``t`` (:func:`hedge_scores`).

    With ``k(lambda) = #{i : t_i > lambda}`` the calibration errors at lambda (non-increasing in
    lambda), ``lambda_hat = inf {lambda in [0, 1] : k(lambda) <= K}``: the ``(K+1)``-th largest ``t``
    (0 when fewer than K + 1 products are ever wrong; 1, the root for everyone, when ``K < 0``), with

    * ``method="crc"``: ``K = floor(eps (n + 1) - 1)``, i.e. ``(n/(n+1)) R_hat(lambda) + 1/(n+1) <= eps``
      (conformal risk control, B = 1);
    * ``method="rcps"``: ``K = max{k : P(Binomial(n, eps) <= k) <= delta}`` (the exact binomial /
      Clopper-Pearson upper confidence bound of the risk is below eps).
    """
    t = np.asarray(scores, dtype=np.float64)
    n = len(t)
    if n == 0:
        raise ValueError("no calibration products: give at least one labelled validation product")
    eps = 1 - _check_unit(precision, "precision", lo_open=True, hi_open=True)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    delta = _check_unit(delta, "delta", lo_open=True, hi_open=True)
    K = _max_errors(n, eps, method, delta)
    if K < 0:
        if warn:
            warnings.warn(f"{n} calibration products are too few to certify precision {1 - eps:g} with {method} "
                          f"(at least {_min_calibration_size(eps, method, delta)} are needed): its threshold is 1, "
                          "every product gets the root (needs review)", CalibrationWarning, stacklevel=3)
        return 1.0
    if K >= n:
        return 0.0
    kth = -np.partition(-t, K)[K]                                # (K+1)-th largest
    return float(min(1.0, max(0.0, kth)))


def calibrate_hedging(probs, y, taxonomy, precisions: Sequence[float] = DEFAULT_PRECISIONS, *,
                      method: str = "rcps", delta: float = DEFAULT_DELTA, rule: str = "threshold",
                      floor: float = DEFAULT_FLOOR, temperatures: Sequence[float] | None = None) -> HedgeCalibration:
    """Calibrate hedging thresholds on held-out products (the validation split) for target precisions.

    Precision means "the true class lies under the predicted node"; every product counts (a root
    prediction is always right, and marked ``needs_review``).

    Parameters
    ----------
    probs : array (n, C)
        Probabilities of the calibration products (not used for training or early stopping
        decisions other than model selection; they must be exchangeable with the products the
        thresholds will be used on).
    y : array (n,)
        Their true classes.
    taxonomy : Taxonomy
    precisions : sequence of float
        Targets ``1 - eps``, each in (0, 1).
    method : {"rcps", "crc"}
        ``"rcps"`` (default; Bates et al., "Distribution-free, risk-controlling prediction sets",
        JACM 2021, i.e. Learn-then-Test with fixed-sequence testing, Angelopoulos et al. 2021):
        **with probability at least 1 - delta over the calibration draw**, a new exchangeable product
        is hedged correctly with probability >= 1 - eps. For the threshold rule the loss
        ``1[t > lambda]`` is non-increasing in lambda, so testing ``H_lambda: risk > eps`` from
        lambda = 1 downwards with the exact binomial p-value ``P(Binomial(n, eps) <= k(lambda))``
        needs no multiplicity correction; for ``info_gain`` (not monotone) the same fixed sequence
        runs over a pre-set grid of lambda from large to small and stops at the first failure.
        ``"crc"`` (Angelopoulos et al., "Conformal risk control", 2022; threshold rule only):
        ``lambda_hat = inf{lambda : (n/(n+1)) R_hat(lambda) + 1/(n+1) <= eps}`` for the bounded
        (B = 1), non-increasing, right-continuous loss ``1[t > lambda]``, which gives
        ``E[1 - precision] <= eps`` **in expectation** over calibration and test draws.
    delta : float
        RCPS failure probability (default 0.1).
    rule : {"threshold", "info_gain"}
    floor : float
        Probability floor of ``needs_review``, stored with the thresholds.
    temperatures : sequence of float, optional
        Temperatures to choose from (:func:`temper`; default :data:`DEFAULT_TEMPERATURES` for RCPS,
        ``(1.0,)`` for CRC, which allows no data-driven choice). With ``K`` of them, each
        temperature's lambda is calibrated at ``delta / K`` (Bonferroni, so all K guarantees hold at
        once with probability >= 1 - delta) and each target keeps the temperature that gives a leaf
        to the most calibration products (ties: the deeper mean specificity, then the earlier in
        the grid). ``(1.0,)`` calibrates the head's own probabilities at ``delta``.

    Returns
    -------
    HedgeCalibration

    Warns
    -----
    CalibrationWarning
        A target needs more calibration products than given (``n >= log(delta)/log(1 - eps)`` for
        RCPS, ``n >= 1/eps - 1`` for CRC): its threshold gives the root to every product.
    """
    tree = hedge_tree(taxonomy)
    p = as_probs(probs, tree.n_classes)
    y = as_labels(y, p.shape[0], taxonomy, name="y")
    rule = _check_rule(rule)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if method == "crc" and rule != "threshold":
        raise ValueError("method='crc' needs a loss monotone in lambda: use rule='threshold' (or method='rcps')")
    delta = _check_unit(delta, "delta", lo_open=True, hi_open=True)
    floor = _check_unit(floor, "floor")
    precisions = [_check_unit(q, "each of precisions", lo_open=True, hi_open=True) for q in precisions]
    if not precisions:
        raise ValueError("precisions is empty: give target precisions such as (0.95, 0.98, 0.99)")
    if temperatures is None:
        temperatures = DEFAULT_TEMPERATURES if method == "rcps" else (1.0,)
    grid = tuple(_check_temperature(t) for t in temperatures)
    if not grid:
        raise ValueError("temperatures is empty: give at least one, e.g. (1.0,)")
    if method == "crc" and grid != (1.0,):
        raise ValueError("method='crc' guarantees precision in expectation, which a temperature chosen on the "
                         "calibration products would break: use temperatures=(1.0,) or method='rcps'")
    n = len(y)
    plan = {q: _plan(n, q, method, delta, grid) for q in precisions}
    jobs: dict = {}
    for q, (ts, d) in plan.items():
        for T in ts:
            jobs.setdefault((T, d), []).append(q)
    best: dict = {}
    for T in dict.fromkeys(t for t, _ in jobs):
        q_T = temper(p, T)
        for (t, d), qs in jobs.items():
            if t != T:
                continue
            for q, (lam, prec, leaves, bits) in _calibrate_at(q_T, y, tree, qs, method, d, rule).items():
                key = (leaves, bits)
                if q not in best or key > best[q][0]:
                    best[q] = (key, T, lam, prec, leaves)
    th = {q: best[q][2] for q in precisions}
    vp = {q: best[q][3] for q in precisions}
    vl = {q: best[q][4] for q in precisions}
    tt = {q: best[q][1] for q in precisions}
    too_few = [q for q in precisions if _max_errors(n, 1 - q, method, plan[q][1]) < 0]
    if too_few:
        need = ", ".join(str(_min_calibration_size(1 - q, method, plan[q][1])) for q in too_few)
        warnings.warn(f"{n} calibration products are too few to certify precision{'s' if len(too_few) > 1 else ''} "
                      f"{', '.join(f'{q:g}' for q in too_few)} with {method} (at least {need} are needed): "
                      f"{'their thresholds give' if len(too_few) > 1 else 'its threshold gives'} every product the root "
                      "(needs review)", CalibrationWarning, stacklevel=2)
    return HedgeCalibration(th, rule, method, delta, floor, n, vp, vl, tt, grid)


def _plan(n: int, precision: float, method: str, delta: float, grid: tuple) -> tuple[tuple, float]:
    """The temperatures a target is calibrated over and the ``delta`` of each: the whole grid at
    ``delta / K``, or (when ``n`` is too small to certify the target at ``delta / K``, a decision made
    from ``n`` alone, before any label is read) the grid's first temperature at ``delta``."""
    if len(grid) > 1 and _max_errors(n, 1 - precision, method, delta / len(grid)) >= 0:
        return grid, delta / len(grid)
    return (1.0,) if 1.0 in grid else grid[:1], delta


def _calibrate_at(p: np.ndarray, y: np.ndarray, tree: HedgeTree, precisions, method: str, delta: float,
                  rule: str) -> dict:
    """``precision -> (lambda, val precision, val leaf share, val mean bits)`` on probabilities ``p``."""
    n = len(y)
    out = {}
    if rule == "threshold":
        nodes, mass = greedy_paths(p, tree)
        wrong = ~tree.contains(nodes, y[:, None])
        t = np.where(wrong, mass, -1.0).max(axis=1)
        for q in precisions:
            lam = calibrated_threshold(t, q, method, delta, warn=False)
            node, _ = _decide_threshold(nodes, mass, lam)
            out[q] = (lam, float((t <= lam).mean()), float((node >= tree.n_inner).mean()),
                      float(tree.bits[node].mean()) if n else 0.0)
    else:
        grid = _INFO_GAIN_GRID
        step = row_block(tree.work_cols, 3)
        dec = np.concatenate([_decide_info_gain(p[a:a + step], tree, grid) for a in range(0, n, step)])
        errors = (~tree.contains(dec, y[:, None])).sum(axis=0)            # (G,)
        for q in precisions:
            K = _max_errors(n, 1 - q, "rcps", delta)
            ok = errors <= K
            stop = int(np.argmin(ok)) if not ok.all() else len(grid)       # first failure in the fixed sequence
            g = max(stop - 1, 0)        # stop == 0 only when K < 0 (warned): the root, never wrong
            out[q] = (float(grid[g]), float(1 - errors[g] / n), float((dec[:, g] >= tree.n_inner).mean()),
                      float(tree.bits[dec[:, g]].mean()))
    return out


# ---------------------------------------------------------------------------------- curves
def _default_grid() -> np.ndarray:
    return np.unique(np.concatenate([np.linspace(0, 1, 101), 1 - np.geomspace(1e-4, 1e-1, 61)]))


def precision_specificity_curve(probs, y, taxonomy, thresholds=None, *, floor: float = DEFAULT_FLOOR) -> pd.DataFrame:
    """Precision against specificity of the threshold rule over a sweep of lambda.

    Parameters
    ----------
    probs : array (N, C)
    y : array (N,)
    taxonomy : Taxonomy
    thresholds : array of float in [0, 1], optional
        The lambdas (default: 0..1 by 0.01 plus 1 - 10^-4 .. 1 - 10^-1, denser near 1).
    floor : float
        For ``review_share``.

    Returns
    -------
    pandas.DataFrame
        One row per lambda (ascending): ``threshold``, ``precision`` (share with the true class
        under the node), ``leaf_coverage`` (share given a single class), ``mean_depth``,
        ``mean_bits`` (``log2 C - log2 |classes under node|``), ``review_share``.
    """
    tree = hedge_tree(taxonomy)
    p = as_probs(probs, tree.n_classes)
    y = as_labels(y, p.shape[0], taxonomy, name="y")
    lams = _default_grid() if thresholds is None else np.sort(np.asarray(thresholds, dtype=np.float64))
    for lam in lams:
        _check_unit(lam, "each of thresholds")
    floor = _check_unit(floor, "floor")
    nodes, mass = greedy_paths(p, tree)
    right = tree.contains(nodes, y[:, None])
    rows = []
    r = np.arange(len(y))
    for lam in lams:
        k = (mass[:, 1:] > lam).sum(axis=1)
        node, prob = nodes[r, k], mass[r, k]
        rows.append({"threshold": float(lam), "precision": float(right[r, k].mean()),
                     "leaf_coverage": float((node >= tree.n_inner).mean()),
                     "mean_depth": float(tree.depth[node].mean()), "mean_bits": float(tree.bits[node].mean()),
                     "review_share": float(((node == 0) | (prob < floor)).mean())})
    return pd.DataFrame(rows)
