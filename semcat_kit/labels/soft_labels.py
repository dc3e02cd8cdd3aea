"""Target distributions over classes (sparse), curriculum schedules, and binary taxonomy codes.

Every builder returns a :class:`SoftTargets`: for class ``c`` a short row of ``K`` class indices
and weights plus a uniform ``floor`` spread over all ``C`` classes, so the target is

    t_c(j) = sum_m weights[c, m] * [indices[c, m] == j] + floor / C,      sum_j t_c(j) = 1.

Convention shared by the neighbour builders: the class itself gets ``1 - alpha``; the remaining
``alpha`` goes to its neighbours (padding ignored). A class without neighbours keeps weight 1 on
itself. Uniform smoothing is the standard one: self gets ``1 - alpha + alpha / C``.
``alpha = 0`` gives exact one-hot targets for every kind.

Kinds (``build(kind, ...)``; each registered once in :data:`TARGET_KINDS` with its builder, the
:class:`~semcat_kit.TrainConfig` fields it reads and what it needs -- :func:`register_kind` adds one):

* ``"onehot"``: ``t_c = e_c`` (alpha ignored);
* ``"uniform"``: label smoothing, ``t_c = (1 - alpha) e_c + alpha / C`` (via ``floor = alpha``);
* ``"topk"``: ``alpha`` spread equally over the top-k neighbours;
* ``"semantic"``: neighbour ``j`` gets ``alpha * softmax_j(sim(c, j) / T)`` over the top-k;
* ``"threshold"``: as ``"semantic"``, restricted to the neighbours with ``sim(c, j) >= threshold``
  (the threshold-neighbour variant of :func:`semcat_kit.labels.similarity.label_neighbors`); a class with
  none keeps a one-hot target;
* ``"tree"``: neighbour ``j`` gets ``alpha * softmax_j(-beta * d(c, j))`` over the ``k`` nearest
  classes in the tree (LCA distance ``d``), the sparse form of Bertinetto et al. (2020)'s soft
  labels ``softmax(-beta d)``: theirs put mass on every class; here the mass is restricted to
  the nearest classes, taken in whole distance levels of at most ``k`` classes in all (a level
  that does not fit is left out rather than cut by class index), and self keeps ``1 - alpha``.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .similarity import Neighbors, tree_neighbors
from ..datasets.taxonomy import Taxonomy

__all__ = ["SoftTargets", "build", "KINDS", "TARGET_KINDS", "TargetKind", "register_kind", "kind_info",
           "config_params", "schedule", "Schedule", "SCHEDULES",
           "taxonomy_codes", "code_scores", "spread_targets"]

#: Names of the registered kinds (kept in step with :data:`TARGET_KINDS` by :func:`register_kind`).
KINDS: tuple[str, ...] = ()
SCHEDULES = ("constant", "linear", "cosine", "step")


@dataclass
class SoftTargets:
    """Sparse soft targets of ``C`` classes.

    Attributes
    ----------
    indices : numpy.ndarray
        (C, K) int64 target classes of each class (``-1`` = padding, weight 0). No repeats in a row.
    weights : numpy.ndarray
        (C, K) float32, each row sums to ``1 - floor``.
    floor : float
        Mass spread uniformly over all ``C`` classes (``floor / C`` each, on top of ``weights``).
    """

    indices: np.ndarray
    weights: np.ndarray
    floor: float = 0.0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int64)
        self.weights = np.ascontiguousarray(self.weights, dtype=np.float32)
        self.floor = float(self.floor)
        if self.indices.ndim != 2 or self.indices.shape != self.weights.shape:
            raise ValueError(f"SoftTargets needs indices and weights of one shape (C, K); got "
                             f"{self.indices.shape} and {self.weights.shape}")
        C = self.indices.shape[0]
        if C == 0:
            raise ValueError("SoftTargets needs at least one class")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], not {self.floor}")
        bad = (self.indices < -1) | (self.indices >= C)
        if bad.any():
            r = int(np.argwhere(bad)[0, 0])
            raise ValueError(f"SoftTargets row {r} has a class index outside [-1, {C})")
        pad = self.indices < 0
        if (self.weights[pad] != 0).any():
            r = int(np.argwhere(pad & (self.weights != 0))[0, 0])
            raise ValueError(f"SoftTargets row {r} has weight on padding (index -1); padding weight must be 0")
        if not np.isfinite(self.weights).all() or (self.weights < 0).any():
            r = int(np.argwhere(~np.isfinite(self.weights) | (self.weights < 0))[0, 0])
            raise ValueError(f"SoftTargets row {r} has a negative or non-finite weight")
        srt = np.sort(np.where(pad, -1 - np.arange(self.indices.shape[1]), self.indices), axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(1)
        if dup.any():
            raise ValueError(f"SoftTargets row {int(np.argmax(dup))} lists a class twice; merge its weights")
        sums = self.weights.sum(1, dtype=np.float64)
        off = np.abs(sums - (1.0 - self.floor)) > 1e-4
        if off.any():
            r = int(np.argmax(off))
            raise ValueError(f"SoftTargets row {r} weights sum to {sums[r]:.6f}, expected "
                             f"1 - floor = {1 - self.floor:.6f}")

    @property
    def n_classes(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        """Number of sparse entries per row (``K``)."""
        return int(self.indices.shape[1])

    def dense(self, max_classes: int = 20_000) -> np.ndarray:
        """The (C, C) float32 target matrix (row ``c`` = target of class ``c``); small ``C`` only."""
        C = self.n_classes
        if C > max_classes:
            raise MemoryError(f"a dense {C}x{C} target matrix is too large; use the sparse form "
                              "(indices, weights, floor) or raise max_classes")
        out = np.full((C, C), self.floor / C, dtype=np.float64)
        m = self.indices >= 0
        rows = np.broadcast_to(np.arange(C)[:, None], self.indices.shape)
        np.add.at(out, (rows[m], self.indices[m]), self.weights[m].astype(np.float64))
        return out.astype(np.float32)

    def neg_entropy(self) -> np.ndarray:
        """(C,) float64 ``sum_j t_c(j) log t_c(j)`` per class (``0 log 0 = 0``), in O(C K).

        Entries listed in ``indices`` carry ``w + floor / C``; the ``C - n_listed`` others carry
        ``floor / C`` alone.
        """
        if "neg_entropy" not in self._cache:
            C = self.n_classes
            f = self.floor / C
            m = self.indices >= 0
            t = np.where(m, self.weights.astype(np.float64) + f, 0.0)
            tlogt = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0).sum(1)
            rest = (C - m.sum(1)) * (f * math.log(f) if f > 0 else 0.0)
            self._cache["neg_entropy"] = tlogt + rest
        return self._cache["neg_entropy"]

    def torch_tables(self, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(indices, weights, neg_entropy)`` as torch tensors on ``device`` (cached per device).

        Padding indices are replaced by 0 (their weight is 0), so they can be used with ``gather``.
        """
        dev = torch.device(device if device is not None else "cpu")
        key = ("torch", str(dev))
        if key not in self._cache:
            idx = torch.from_numpy(np.where(self.indices >= 0, self.indices, 0)).to(dev)
            w = torch.from_numpy(self.weights).to(dev)
            h = torch.from_numpy(self.neg_entropy()).to(dev)
            self._cache[key] = (idx, w, h)
        return self._cache[key]

    def __repr__(self) -> str:
        return f"SoftTargets({self.n_classes} classes, K={self.k}, floor={self.floor:g})"


# ---------------------------------------------------------------------------------- builders
def _check_alpha(alpha) -> float:
    a = float(alpha)
    if not 0.0 <= a <= 1.0 or math.isnan(a):
        raise ValueError(f"alpha must be in [0, 1], not {alpha!r}")
    return a


def spread_targets(n_classes: int, alpha: float, nb_idx: np.ndarray, nb_w: np.ndarray) -> SoftTargets:
    """Soft targets that keep ``1 - alpha`` on each class and spread ``alpha`` over its neighbours.

    ``q_c(c) = 1 - alpha`` and ``q_c(nb_idx[c, j]) = alpha * nb_w[c, j]``; ``nb_w`` rows sum to 1
    over the valid entries (``nb_idx >= 0``); a class without a valid neighbour keeps 1 on itself.
    The building block of the neighbour kinds, and of a kind registered with :func:`register_kind`.

    Parameters
    ----------
    n_classes : int
    alpha : float
        Mass moved off the true class (0: exact one-hot).
    nb_idx : numpy.ndarray (C, k) int
        Neighbour class ids, -1 for none.
    nb_w : numpy.ndarray (C, k) float
        Neighbour weights.
    """
    C = n_classes
    valid = nb_idx >= 0
    has = valid.any(1)
    nb_w = np.where(valid, nb_w, 0.0)
    self_w = np.where(has, 1.0 - alpha, 1.0)
    w = np.concatenate([self_w[:, None], alpha * nb_w * has[:, None]], axis=1)
    idx = np.concatenate([np.arange(C, dtype=np.int64)[:, None], np.where(valid, nb_idx, -1)], axis=1)
    if alpha == 0.0:  # exact one-hot
        idx, w = idx[:, :1], np.ones((C, 1))
    return SoftTargets(idx, w.astype(np.float32), 0.0)


def _masked_softmax(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if scores.shape[1] == 0:
        return np.zeros(scores.shape)
    s = np.where(valid, scores, -np.inf)
    mx = s.max(1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.where(valid, np.exp(s - mx), 0.0)
    z = e.sum(1, keepdims=True)
    return np.divide(e, z, out=np.zeros_like(e), where=z > 0)


def _check_neighbors(kind: str, neighbors, n_classes: int) -> Neighbors:
    if neighbors is None:
        raise ValueError(f"build(kind={kind!r}) needs neighbors=...: pass "
                         "semcat_kit.labels.similarity.label_neighbors(embeddings, k) (or tree_neighbors/blend)")
    if not isinstance(neighbors, Neighbors):
        raise TypeError(f"build(kind={kind!r}): neighbors must be a similarity.Neighbors, "
                        f"not {type(neighbors).__name__}")
    if neighbors.n_classes != n_classes:
        raise ValueError(f"build(kind={kind!r}): neighbors cover {neighbors.n_classes} classes but "
                         f"n_classes={n_classes}; compute them on the same taxonomy")
    return neighbors


_TREE_CACHE: dict[tuple[int, int], tuple[weakref.ref, Neighbors]] = {}


def _cached_tree_neighbors(taxonomy: Taxonomy, k: int) -> Neighbors:
    key = (id(taxonomy), k)
    hit = _TREE_CACHE.get(key)
    if hit is not None and hit[0]() is taxonomy:
        return hit[1]
    nb = tree_neighbors(taxonomy, k)
    for kk in [kk for kk, (ref, _) in _TREE_CACHE.items() if ref() is None]:
        del _TREE_CACHE[kk]
    _TREE_CACHE[key] = (weakref.ref(taxonomy), nb)
    return nb


# ---------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TargetKind:
    """One kind of soft targets: its builder and what it reads.

    ``builder(n_classes, alpha, *, neighbors, taxonomy, **params) -> SoftTargets`` with ``alpha``
    already checked (``0 < alpha <= 1``; ``alpha == 0`` is one-hot for every kind but ``uniform``).
    ``params`` maps each builder keyword to the :class:`semcat_kit.TrainConfig` field that sets it
    (so a kind's options reach the config, the Workspace, the notebooks and ``semcat train`` from
    here alone). ``needs_neighbors`` / ``needs_taxonomy``: what :func:`build` must be given.
    """

    name: str
    builder: Callable[..., "SoftTargets"]
    params: dict = field(default_factory=dict)
    needs_neighbors: bool = False
    needs_taxonomy: bool = False
    doc: str = ""
    #: Row name in :func:`semcat_kit.default_suite` (formatted with the config's fields), or None to
    #: leave the kind out of the default comparison.
    suite_name: str | None = None


#: Every soft-label kind by name, in registration order. Add one with :func:`register_kind`.
TARGET_KINDS: dict[str, TargetKind] = {}


def register_kind(kind: TargetKind, *, overwrite: bool = False) -> TargetKind:
    """Register a soft-label kind (name must be new unless ``overwrite``); returns it.

    A neighbour kind's builder usually ends in :func:`spread_targets`, e.g. all of ``alpha`` on the
    nearest neighbour: ``spread_targets(C, alpha, neighbors.indices[:, :1], np.ones((C, 1)))``.
    """
    if kind.name in TARGET_KINDS and not overwrite:
        raise ValueError(f"soft-label kind {kind.name!r} is already registered; pass overwrite=True to replace it")
    TARGET_KINDS[kind.name] = kind
    global KINDS
    KINDS = tuple(TARGET_KINDS)
    return kind


def kind_info(name: str) -> TargetKind:
    """The registered :class:`TargetKind` called ``name`` (``ValueError`` listing the known ones)."""
    if name not in TARGET_KINDS:
        raise ValueError(f"unknown soft-label kind {name!r}; choose one of {', '.join(TARGET_KINDS)}")
    return TARGET_KINDS[name]


def config_params(kind: str, config) -> dict:
    """The builder keywords of ``kind`` read from a :class:`TrainConfig` (its ``params`` mapping)."""
    return {p: getattr(config, f) for p, f in kind_info(kind).params.items()}


def build(
    kind: str,
    n_classes: int,
    alpha: float = 0.1,
    neighbors: Neighbors | None = None,
    taxonomy: Taxonomy | None = None,
    temperature: float = 1.0,
    beta: float = 1.0,
    k: int | None = None,
    alpha_by: str = "constant",
    **params,
) -> SoftTargets:
    """Build the soft targets of every class with the registered builder of ``kind``.

    Parameters
    ----------
    kind : str
        A key of :data:`TARGET_KINDS` (``"onehot"``, ``"uniform"``, ``"topk"``, ``"semantic"``,
        ``"threshold"``, ``"tree"``, or one added with :func:`register_kind`); see the module
        docstring for each formula.
    n_classes : int
        Number of classes ``C``.
    alpha : float in [0, 1]
        Mass moved off the true class (``1 - alpha`` stays on it).
    neighbors : Neighbors, optional
        Required by kinds that need neighbours (``"topk"``, ``"semantic"``, ``"threshold"``). For
        ``"tree"`` its ``k`` sets how many tree neighbours are used (unless ``k`` is given).
    taxonomy : Taxonomy, optional
        Required by ``"tree"``.
    temperature : float > 0
        ``"semantic"`` / ``"threshold"``: weights ``softmax(sim / temperature)``.
    beta : float >= 0
        ``"tree"``: weights ``softmax(-beta * d)``.
    k : int, optional
        ``"tree"``: number of nearest classes in the tree (default ``neighbors.k`` or 20).
    alpha_by : {"constant", "similarity"}
        ``"similarity"``: the mass moved off class ``c`` is ``alpha_c`` of
        :func:`semcat_kit.labels.similarity.class_alpha` (``min(0.5, alpha * s_c / mean(s))``, ``s_c`` the mean
        similarity of ``c``'s neighbours: the given ``neighbors``, or the tree neighbours for
        ``"tree"``), so classes with strong semantic overlap are smoothed more; the neighbours'
        weights are scaled by ``alpha_c / alpha``. Kinds with neighbours only.
    **params
        Further keywords of the kind's builder (e.g. ``threshold`` of ``"threshold"``).
    """
    info = kind_info(kind)
    if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, not {n_classes!r}")
    C = int(n_classes)
    a = _check_alpha(alpha)
    if info.needs_neighbors:
        neighbors = _check_neighbors(kind, neighbors, C)
    if info.needs_taxonomy:
        if taxonomy is None:
            raise ValueError(f"build(kind={kind!r}) needs taxonomy=... (the tree that gives LCA distances)")
        if taxonomy.n_classes != C:
            raise ValueError(f"build(kind={kind!r}): taxonomy has {taxonomy.n_classes} classes but n_classes={C}")
    if kind == "onehot" or (a == 0.0 and kind != "uniform"):
        return SoftTargets(np.arange(C, dtype=np.int64)[:, None], np.ones((C, 1), np.float32), 0.0)
    known = {"temperature": temperature, "beta": beta, "k": k}
    kw = {p: known[p] for p in info.params if p in known}
    unknown = sorted(set(params) - set(info.params))
    if unknown:
        raise ValueError(f"build(kind={kind!r}) does not take {unknown}; its options are {sorted(info.params)}")
    kw.update(params)
    out = info.builder(C, a, neighbors=neighbors, taxonomy=taxonomy, **kw)
    if alpha_by == "constant":
        return out
    if alpha_by != "similarity":
        raise ValueError(f"alpha_by must be 'constant' or 'similarity', not {alpha_by!r}")
    if not (info.needs_neighbors or kind == "tree"):
        raise ValueError(f"build(kind={kind!r}, alpha_by='similarity'): this kind has no neighbours to measure "
                         "similarity with; use a neighbour kind or 'tree'")
    return _scale_by_similarity(out, a, neighbors if info.needs_neighbors
                                else _cached_tree_neighbors(taxonomy, int(k) if k is not None else
                                                            (neighbors.k if neighbors is not None else 20)))


def _scale_by_similarity(t: SoftTargets, alpha: float, neighbors: Neighbors) -> SoftTargets:
    """Rows rescaled to per-class masses ``class_alpha(neighbors, alpha)`` (column 0 is the class itself)."""
    from .similarity import class_alpha

    if t.floor != 0 or t.indices.shape[1] < 2 or alpha == 0:
        return t
    assert (t.indices[:, 0] == np.arange(t.indices.shape[0])).all()
    a_c = class_alpha(neighbors, alpha)
    w = t.weights.astype(np.float64).copy()
    moved = w[:, 1:].sum(1)
    has = moved > 0
    w[has, 1:] *= (a_c[has] / moved[has])[:, None]
    w[:, 0] = 1.0 - w[:, 1:].sum(1)
    return SoftTargets(t.indices, w.astype(np.float32), 0.0)


def _build_uniform(C, a, **_):
    return SoftTargets(np.arange(C, dtype=np.int64)[:, None], np.full((C, 1), 1.0 - a, np.float32), a)


def _build_topk(C, a, *, neighbors, **_):
    valid = neighbors.mask
    cnt = valid.sum(1, keepdims=True)
    w = np.divide(valid.astype(np.float64), cnt, out=np.zeros(valid.shape), where=cnt > 0)
    return spread_targets(C, a, neighbors.indices, w)


def _check_temperature(kind, temperature) -> float:
    T = float(temperature)
    if not T > 0:
        raise ValueError(f"build(kind={kind!r}): temperature must be > 0, not {temperature!r}")
    return T


def _build_semantic(C, a, *, neighbors, temperature=1.0, **_):
    T = _check_temperature("semantic", temperature)
    w = _masked_softmax(neighbors.sims.astype(np.float64) / T, neighbors.mask)
    return spread_targets(C, a, neighbors.indices, w)


def _build_threshold(C, a, *, neighbors, temperature=1.0, threshold=0.5, **_):
    """Semantic weights over the neighbours with similarity >= threshold only (at most k)."""
    T = _check_temperature("threshold", temperature)
    t = float(threshold)
    if not -1.0 <= t <= 1.0:
        raise ValueError(f"build(kind='threshold'): threshold must be a cosine in [-1, 1], not {threshold!r}")
    keep = neighbors.mask & (neighbors.sims >= t)
    idx = np.where(keep, neighbors.indices, -1)
    return spread_targets(C, a, idx, _masked_softmax(neighbors.sims.astype(np.float64) / T, keep))


def _build_tree(C, a, *, neighbors=None, taxonomy, beta=1.0, k=None, **_):
    b = float(beta)
    if not b >= 0:
        raise ValueError(f"build(kind='tree'): beta must be >= 0, not {beta!r}")
    kk = int(k) if k is not None else (neighbors.k if neighbors is not None else 20)
    idx, d = _tree_levels(taxonomy, kk)
    valid = idx >= 0
    return spread_targets(C, a, idx, _masked_softmax(-b * d.astype(np.float64), valid))


for _kind in [
    TargetKind("onehot", lambda C, a, **_: SoftTargets(np.arange(C, dtype=np.int64)[:, None],
                                                      np.ones((C, 1), np.float32), 0.0),
               doc="t_c = e_c (alpha ignored)", suite_name="one-hot"),
    TargetKind("uniform", _build_uniform, doc="label smoothing t_c = (1 - alpha) e_c + alpha / C",
               suite_name="uniform LS α={alpha:g}"),
    TargetKind("topk", _build_topk, needs_neighbors=True, doc="alpha spread equally over the top-k neighbours",
               suite_name="top-{k} uniform"),
    TargetKind("semantic", _build_semantic, {"temperature": "temperature"}, needs_neighbors=True,
               doc="neighbour j gets alpha * softmax_j(sim(c, j) / T) over the top-k",
               suite_name="top-{k} semantic"),
    TargetKind("tree", _build_tree, {"beta": "tree_beta", "k": "k"}, needs_taxonomy=True,
               doc="neighbour j gets alpha * softmax_j(-beta d(c, j)) over the k nearest classes in the tree",
               suite_name="tree top-{k}"),
    TargetKind("threshold", _build_threshold, {"temperature": "temperature", "threshold": "sim_threshold"},
               needs_neighbors=True,
               doc="like semantic, over the neighbours with sim(c, j) >= threshold only (classes without any "
                   "keep a one-hot target)", suite_name="top-{k} semantic, sim ≥ {sim_threshold:g}"),
]:
    register_kind(_kind)


def _tree_levels(taxonomy: Taxonomy, k: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``k`` nearest classes in the tree per class, cut at whole distance levels.

    When the ``k``-th nearest class shares its distance with classes beyond ``k`` (a level that
    does not fit), that whole level is dropped, so no class is preferred over an equally distant
    one by its index; a row keeps a partial level only when even its nearest level has more than
    ``k`` classes (then the ``k`` lowest indices). Returns ``(indices, distances)``, ``-1`` / 0 padded.
    """
    C = taxonomy.n_classes
    if k <= 0 or C < 2:
        return np.full((C, 0), -1, dtype=np.int64), np.zeros((C, 0), dtype=np.int64)
    nb = _cached_tree_neighbors(taxonomy, k + 1)
    valid = nb.mask
    d = np.where(valid, taxonomy.lca_distance(np.arange(C)[:, None], np.where(valid, nb.indices, 0)), 0)
    kk = min(k, nb.k)
    keep = valid[:, :kk].copy()
    if nb.k > kk:     # an extra column tells whether the last level continues past k
        bound = d[:, kk - 1]
        partial = valid[:, kk] & (d[:, kk] == bound) & (d[:, 0] < bound)
        keep &= ~(partial[:, None] & (d[:, :kk] == bound[:, None]))
    return np.where(keep, nb.indices[:, :kk], -1), np.where(keep, d[:, :kk], 0)


# ---------------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class Schedule:
    """Curriculum for alpha: ``schedule(epoch) -> alpha`` going from ``alpha`` (epoch 0) to
    ``final`` (last epoch ``epochs - 1``); later epochs stay at ``final``.

    With ``t = epoch / (epochs - 1)`` (clipped to [0, 1]; with ``epochs = 1``, epoch 0 is the
    start ``t = 0``):

    * constant: ``alpha``
    * linear: ``alpha + (final - alpha) t``
    * cosine: ``final + (alpha - final) (1 + cos(pi t)) / 2``
    * step: ``n_steps`` equal stages, ``alpha + (final - alpha) s / (n_steps - 1)`` in stage
      ``s = min(n_steps - 1, floor(epoch n_steps / epochs))``; the last epoch is always the last stage
    """

    kind: str
    alpha: float
    epochs: int
    final: float = 0.0
    n_steps: int = 2

    def __call__(self, epoch: int) -> float:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, not {epoch}")
        a, f = self.alpha, self.final
        if self.kind == "constant":
            return a
        if self.epochs > 1:
            t = min(1.0, epoch / (self.epochs - 1))
        else:  # a single epoch is the soft start; any later epoch is past the end
            t = 0.0 if epoch == 0 else 1.0
        if self.kind == "linear":
            return a + (f - a) * t
        if self.kind == "cosine":
            return f + (a - f) * (1.0 + math.cos(math.pi * t)) / 2.0
        stage = min(self.n_steps - 1, int(epoch * self.n_steps // self.epochs))
        if self.epochs > 1 and epoch >= self.epochs - 1:   # with fewer epochs than stages, the last one is still final
            stage = self.n_steps - 1
        return a + (f - a) * stage / (self.n_steps - 1)


def schedule(kind: str, alpha: float, epochs: int, final: float = 0.0, n_steps: int = 2) -> Schedule:
    """Alpha per epoch, soft early and harder later (see :class:`Schedule` for the formulas).

    Parameters
    ----------
    kind : {"constant", "linear", "cosine", "step"}
    alpha : float in [0, 1]
        Value at epoch 0.
    epochs : int >= 1
        Number of epochs; the last one (``epochs - 1``) reaches ``final``.
    final : float in [0, 1]
        Value at the end (ignored by ``"constant"``).
    n_steps : int >= 2
        ``"step"``: number of stages.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    a, f = _check_alpha(alpha), _check_alpha(final)
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
    if int(n_steps) < 2:
        raise ValueError(f"n_steps must be >= 2, not {n_steps}")
    return Schedule(kind, a, int(epochs), f, int(n_steps))


# ---------------------------------------------------------------------------------- binary codes
def taxonomy_codes(taxonomy: Taxonomy, return_nodes: bool = False):
    """Binary label codes: one bit per taxonomy node (root excluded), set when that node is the
    class or one of its ancestors.

    Returns
    -------
    codes : numpy.ndarray
        (C, B) float32 of 0/1, ``B`` = number of non-root nodes used by some class.
    nodes : list[str]
        (only with ``return_nodes=True``) full path of the node behind each bit.
    """
    anc = taxonomy.ancestor_matrix()[:, 1:]
    used = np.unique(anc[anc >= 0])
    col = np.full(len(taxonomy.node_paths), -1, dtype=np.int64)
    col[used] = np.arange(len(used))
    C = taxonomy.n_classes
    codes = np.zeros((C, len(used)), dtype=np.float32)
    r, c = np.nonzero(anc >= 0)
    codes[r, col[anc[r, c]]] = 1.0
    if return_nodes:
        return codes, [taxonomy.sep.join(taxonomy.node_paths[v]) for v in used]
    return codes


def code_scores(bit_logits, codes) -> torch.Tensor:
    """Class log-likelihood scores from per-bit logits.

    ``score(n, c) = sum_b [ codes[c,b] log sigmoid(x[n,b]) + (1 - codes[c,b]) log sigmoid(-x[n,b]) ]
    = sum_b log sigmoid(-x[n,b]) + sum_b codes[c,b] x[n,b]``, computed as one matmul.

    Parameters
    ----------
    bit_logits : (N, B) tensor
    codes : (C, B) array or tensor (from :func:`taxonomy_codes`)

    Returns
    -------
    torch.Tensor
        (N, C) float32 scores (log-probabilities of each class's code; argmax = predicted class).
    """
    x = torch.as_tensor(bit_logits).float()
    cd = torch.as_tensor(codes, device=x.device).float()
    if x.ndim != 2 or cd.ndim != 2 or x.shape[1] != cd.shape[1]:
        raise ValueError(f"bit_logits (N, B) and codes (C, B) must agree on B; got {tuple(x.shape)} "
                         f"and {tuple(cd.shape)}")
    return torch.nn.functional.logsigmoid(-x).sum(1, keepdim=True) + x @ cd.T
