"""Label-to-label similarity and sparse top-k neighbours.

Three similarities between classes ``i`` and ``j``:

* **name**: cosine of class-text embeddings, ``s(i, j) = <e_i, e_j> / (|e_i| |e_j|)``;
* **tree**: ``s_tree(i, j) = 1 - d(i, j) / D`` with ``d`` the LCA distance of
  :meth:`semcat_kit.Taxonomy.lca_distance` and ``D`` the taxonomy depth (the largest possible ``d``);
* **blend**: ``s = w * s_name + (1 - w) * s_tree``;
* **prototype**: cosine of class prototypes, the normalised mean embedding of each class's training
  items (text, image, or both fused), :func:`prototype_embeddings` -- what the products look like,
  not only what the categories are called; :func:`blend_sources` mixes any of these with weights.

:func:`class_alpha` turns a neighbour table into a per-class smoothing mass that grows with how
similar a class's neighbours are.

Neighbour tables are computed block by block (a ``block x C`` slab of scores and a ``topk`` per
slab), so memory stays ``O(C k + block C)`` and never holds a ``C x C`` matrix. Self is excluded
by index (duplicate class names have identical embeddings but are still neighbours of each other).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..datasets.taxonomy import Taxonomy

__all__ = [
    "Neighbors",
    "label_neighbors",
    "tree_neighbors",
    "blend",
    "blend_sources",
    "prototype_embeddings",
    "class_alpha",
    "PROTOTYPE_MODALITIES",
    "class_texts",
    "tree_similarity",
    "DEFAULT_TEMPLATE",
    "TEMPLATE_FIELDS",
]

#: Default class text, chosen by measurement (docs/class_text_choice.md, scripts/measure_class_text.py).
DEFAULT_TEMPLATE = "{path}"
#: Placeholders a class-text template may use.
TEMPLATE_FIELDS = ("name", "parent", "path", "top")

#: What a class prototype is built from.
PROTOTYPE_MODALITIES = ("text", "image", "fused")

# scores per block: ~2**25 float32 (128 MB) at most
_BLOCK_ELEMS = 1 << 25


@dataclass
class Neighbors:
    """Sparse top-k neighbour table of ``C`` classes.

    Attributes
    ----------
    indices : numpy.ndarray
        (C, k) int64 neighbour class ids, best first; ``-1`` pads rows with fewer than ``k``.
    sims : numpy.ndarray
        (C, k) float32 similarities, sorted descending over the valid entries; ``0`` at padding.
    """

    indices: np.ndarray
    sims: np.ndarray

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.sims = np.asarray(self.sims, dtype=np.float32)
        if self.indices.ndim != 2 or self.indices.shape != self.sims.shape:
            raise ValueError(f"Neighbors needs indices and sims of one shape (C, k); got "
                             f"{self.indices.shape} and {self.sims.shape}")
        C = self.indices.shape[0]
        bad = (self.indices < -1) | (self.indices >= C)
        if bad.any():
            r = int(np.argwhere(bad)[0, 0])
            raise ValueError(f"Neighbors row {r} has index {self.indices[r][bad[r]][0]} outside [-1, {C})")
        selfhit = self.indices == np.arange(C)[:, None]
        if selfhit.any():
            r = int(np.argwhere(selfhit)[0, 0])
            raise ValueError(f"Neighbors row {r} lists the class itself; self must be excluded")
        pad = self.indices < 0
        if (self.sims[pad] != 0).any():
            r = int(np.argwhere(pad & (self.sims != 0))[0, 0])
            raise ValueError(f"Neighbors row {r} has a non-zero similarity at padding (index -1); "
                             "padding must have similarity 0")

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.indices.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """(C, k) bool: True at real neighbours, False at padding."""
        return self.indices >= 0

    def to_scipy(self):
        """The table as a ``scipy.sparse.csr_matrix`` (C, C) holding the similarities (padding dropped)."""
        from scipy import sparse

        C = self.n_classes
        rows = np.repeat(np.arange(C), self.k).reshape(C, self.k)
        m = self.mask
        return sparse.csr_matrix((self.sims[m], (rows[m], self.indices[m])), shape=(C, C))

    def __repr__(self) -> str:
        return f"Neighbors({self.n_classes} classes, k={self.k}, {int(self.mask.sum())} links)"


# ---------------------------------------------------------------------------------- helpers
def _as_embeddings(embeddings, what: str = "embeddings") -> torch.Tensor:
    x = torch.as_tensor(np.asarray(embeddings) if not torch.is_tensor(embeddings) else embeddings)
    x = x.detach().to("cpu", torch.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (n_classes, dim); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} has no rows; give one embedding per class")
    finite = torch.isfinite(x).all(1)
    if not finite.all():
        rows = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(f"{what} rows {rows} contain NaN/inf; re-encode those class texts")
    norm = x.norm(dim=1, keepdim=True)
    zero = norm.flatten() == 0
    if zero.any():
        rows = torch.nonzero(zero).flatten()[:5].tolist()
        raise ValueError(f"{what} rows {rows} are all zeros (no direction for a cosine); "
                         "re-encode those class texts")
    return x / norm


def _check_k(k: int, C: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k must be a non-negative integer, not {k!r}")
    return int(min(k, C - 1))


def _block_size(block_size: int | None, C: int) -> int:
    if block_size is None:
        return max(1, min(C, _BLOCK_ELEMS // max(C, 1)))
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, not {block_size}")
    return int(block_size)


def _blockwise_topk(
    scores: Callable[[int, int], torch.Tensor],
    C: int,
    k: int,
    block_size: int | None,
    progress: bool | None,
    desc: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns (self excluded) of the row blocks ``scores(s, e) -> (e - s, C)``.

    Within a row, equal scores are ordered by column index (deterministic output).
    """
    idx = np.empty((C, k), dtype=np.int64)
    val = np.empty((C, k), dtype=np.float64)
    if k == 0:
        return idx, val
    bs = _block_size(block_size, C)
    starts = range(0, C, bs)
    show = (C >= 10_000) if progress is None else bool(progress)
    for s in tqdm(starts, desc=desc, disable=not show, unit="block"):
        e = min(C, s + bs)
        S = scores(s, e)
        r = torch.arange(e - s)
        S[r, r + s] = -torch.inf  # self by index
        # one extra column: topk picks arbitrarily among scores tied with the k-th, so rows whose
        # (k+1)-th score equals the k-th are redone exactly (rare), keeping the lower column index
        extra = int(k < C - 1)
        v, i = torch.topk(S, k + extra, dim=1, largest=True, sorted=True)
        tied = torch.nonzero(v[:, k - 1] == v[:, k]).flatten() if extra else torch.zeros(0, dtype=torch.long)
        v, i = v[:, :k].clone(), i[:, :k].clone()
        if len(tied):   # all scores above the k-th, then the lowest-index columns equal to it
            St, kth = S[tied], v[tied, k - 1:k]
            eq = St == kth
            need = k - (St > kth).sum(1, keepdim=True)
            sel = (St > kth) | (eq & (eq.cumsum(1, dtype=torch.int32) <= need))
            i[tied] = torch.nonzero(sel)[:, 1].reshape(len(tied), k)
            v[tied] = torch.gather(St, 1, i[tied])
        v = v.double().numpy()
        i = i.numpy()
        # deterministic order: by value descending, ties by lower column index
        o = np.lexsort((i, -v), axis=-1)
        idx[s:e] = np.take_along_axis(i, o, 1)
        val[s:e] = np.take_along_axis(v, o, 1)
    return idx, val


def _empty(C: int) -> "Neighbors":
    return Neighbors(np.empty((C, 0), np.int64), np.empty((C, 0), np.float32))


def _apply_threshold(idx: np.ndarray, val: np.ndarray, threshold: float | None) -> Neighbors:
    sims = val.astype(np.float32)
    if threshold is not None:
        keep = val >= threshold
        idx = np.where(keep, idx, -1)
        sims = np.where(keep, sims, np.float32(0))
    return Neighbors(idx, sims)


# ---------------------------------------------------------------------------------- name neighbours
def label_neighbors(
    embeddings,
    k: int = 20,
    threshold: float | None = None,
    block_size: int | None = None,
    progress: bool | None = None,
) -> Neighbors:
    """Top-k most similar classes of every class by cosine of class-text embeddings.

    ``s(i, j) = <e_i, e_j> / (|e_i| |e_j|)``; for each ``i`` the ``k`` largest ``s(i, j)``,
    ``j != i`` (by index), sorted descending (ties by lower index).

    Parameters
    ----------
    embeddings : array-like (C, d)
        One embedding per class (normalised here; rows must be finite and non-zero).
    k : int
        Neighbours per class, capped at ``C - 1``.
    threshold : float, optional
        Keep only neighbours with ``s >= threshold`` (still at most ``k``); the rest is padding
        (index ``-1``, similarity ``0``).
    block_size : int, optional
        Rows per block (default: about 32 M scores per block). Memory is ``O(C k + block C)``.
    progress : bool, optional
        Show a progress bar (default: when ``C >= 10,000``).

    Returns
    -------
    Neighbors
    """
    x = _as_embeddings(embeddings)
    C = x.shape[0]
    k = _check_k(k, C)
    if k == 0:
        return _empty(C)
    idx, val = _blockwise_topk(lambda s, e: x[s:e] @ x.T, C, k, block_size, progress, "name neighbours")
    return _apply_threshold(idx, val, threshold)


# ---------------------------------------------------------------------------------- tree neighbours
class _TreeScorer:
    """Blockwise LCA distances from the ancestor table (O(block C depth) time, O(block C) memory)."""

    def __init__(self, taxonomy: Taxonomy):
        if not isinstance(taxonomy, Taxonomy):
            raise TypeError(f"taxonomy must be a semcat_kit.Taxonomy, not {type(taxonomy).__name__}")
        anc = taxonomy.ancestor_matrix()
        self.anc = torch.from_numpy(anc[:, 1:].astype(np.int32))  # (C, D), root column dropped
        self.depth = torch.from_numpy(np.asarray(taxonomy.depth(np.arange(taxonomy.n_classes))).astype(np.int16))
        self.max_d = max(int(taxonomy.max_depth), 1)
        self.C = taxonomy.n_classes

    def distance(self, s: int, e: int) -> torch.Tensor:
        """(e - s, C) int16 LCA distances of classes s..e-1 to every class."""
        lca = torch.zeros((e - s, self.C), dtype=torch.int16)
        for lv in range(self.anc.shape[1]):
            row = self.anc[s:e, lv]
            col = self.anc[:, lv]
            valid = row >= 0
            if not valid.any():
                break
            lca += (row[:, None] == col[None, :]) & valid[:, None]
        return torch.maximum(self.depth[s:e, None], self.depth[None, :]) - lca

    def similarity(self, s: int, e: int) -> torch.Tensor:
        """(e - s, C) float32 tree similarity ``1 - d / D``."""
        return 1.0 - self.distance(s, e).float() / self.max_d


def tree_similarity(taxonomy: Taxonomy, i, j) -> np.ndarray:
    """Tree similarity ``1 - d(i, j) / D`` (``D`` = taxonomy depth), vectorised over index arrays."""
    return 1.0 - np.asarray(taxonomy.lca_distance(i, j), dtype=np.float32) / max(int(taxonomy.max_depth), 1)


def tree_neighbors(
    taxonomy: Taxonomy,
    k: int = 20,
    block_size: int | None = None,
    progress: bool | None = None,
) -> Neighbors:
    """The ``k`` nearest classes of every class in the tree (smallest LCA distance).

    Ties in distance are broken by lower class index (deterministic). ``sims`` holds the tree
    similarity ``1 - d / D``.
    """
    sc = _TreeScorer(taxonomy)
    C = sc.C
    k = _check_k(k, C)
    if k == 0:
        return _empty(C)
    # exact integer key in float64: larger is better; (D - d) * C + (C - 1 - j) breaks ties by index
    cols = torch.arange(C - 1, -1, -1, dtype=torch.float64)

    def key(s, e):
        return (sc.max_d - sc.distance(s, e)).double() * C + cols

    idx, val = _blockwise_topk(key, C, k, block_size, progress, "tree neighbours")
    d = sc.max_d - np.floor_divide(val, C)
    return Neighbors(idx, (1.0 - d / sc.max_d).astype(np.float32))


def blend(
    name_embeddings,
    taxonomy: Taxonomy,
    weight: float = 0.5,
    k: int = 20,
    threshold: float | None = None,
    block_size: int | None = None,
    progress: bool | None = None,
) -> Neighbors:
    """Top-k neighbours under a blend of name and tree similarity.

    ``s(i, j) = w * cos(e_i, e_j) + (1 - w) * (1 - d(i, j) / D)``, computed block by block.
    ``weight=1`` is :func:`label_neighbors`, ``weight=0`` is :func:`tree_neighbors`.
    """
    w = float(weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"blend weight must be in [0, 1], not {weight!r}")
    x = _as_embeddings(name_embeddings, "name_embeddings")
    sc = _TreeScorer(taxonomy)
    C = sc.C
    if x.shape[0] != C:
        raise ValueError(f"name_embeddings has {x.shape[0]} rows but the taxonomy has {C} classes; "
                         "encode class_texts(taxonomy) in class order")
    k = _check_k(k, C)
    if k == 0:
        return _empty(C)
    if w == 0.0 and threshold is None:
        return tree_neighbors(taxonomy, k, block_size=block_size, progress=progress)

    def score(s, e):
        return w * (x[s:e] @ x.T) + (1.0 - w) * sc.similarity(s, e)

    idx, val = _blockwise_topk(score, C, k, block_size, progress, "blend neighbours")
    return _apply_threshold(idx, val, threshold)


# ---------------------------------------------------------------------------------- prototypes
def _class_means(x: np.ndarray, ok: np.ndarray, y: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class means of the rows of ``x`` flagged ``ok``, normalised; (C, d) and (C,) counts."""
    d = x.shape[1]
    sums = np.zeros((C, d), dtype=np.float64)
    yy, xx = y[ok], np.asarray(x, dtype=np.float64)[ok]
    np.add.at(sums, yy, xx)
    counts = np.bincount(yy, minlength=C)
    norm = np.linalg.norm(sums, axis=1)
    has = (counts > 0) & (norm > 0)
    out = np.zeros((C, d), dtype=np.float64)
    out[has] = sums[has] / norm[has, None]
    return out, np.where(has, counts, 0)


def prototype_embeddings(emb, y, n_classes: int, modality: str = "fused", name_embeddings=None,
                         return_counts: bool = False):
    """Class prototypes: the normalised mean embedding of each class's items.

    ``p_c = m_c / |m_c|`` with ``m_c`` the mean of the (present) ``modality`` embeddings of the items
    of class ``c``. ``"fused"`` concatenates the text and the image prototype, each normalised, and
    normalises the result, ``p_c = [t_c, v_c] / |[t_c, v_c]|``: a class seen only in one modality
    keeps that part and zeros for the other. Feed the result to :func:`label_neighbors`
    (``s(i, j) = <p_i, p_j>``) or :func:`blend_sources`.

    Parameters
    ----------
    emb : Embeddings or array (N, d)
        Training embeddings (a bare array is taken as text).
    y : array (N,) of int
        Class index of every row (``taxonomy.index_of(labels)``).
    n_classes : int
    modality : {"text", "image", "fused"}
    name_embeddings : array (C, d_text), optional
        Class-name embeddings from the *same text encoder* (``encode_texts(class_texts(tax))``):
        classes without items (or without text items) get their name embedding as text part.
        For ``"image"`` they are used only if they have the image dimension (a CLIP-style shared
        space).
    return_counts : bool
        Also return the (C,) number of items behind each class's prototype (0 = fallback).

    Returns
    -------
    numpy.ndarray (C, d) float32, rows of unit norm (and the counts with ``return_counts``).

    Raises
    ------
    ValueError
        A class has no item and no fallback (the message names the classes and says what to pass),
        or inputs of the wrong shape.
    """
    from .._core.contracts import as_embedding_table

    if modality not in PROTOTYPE_MODALITIES:
        raise ValueError(f"modality must be one of {PROTOTYPE_MODALITIES}, not {modality!r}")
    C = int(n_classes)
    t = as_embedding_table(emb, "emb")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(t):
        raise ValueError(f"y must be one class index per embedding row ({len(t)}); got shape {y.shape}")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= C):
        raise ValueError(f"y must hold class indices in [0, {C}) (use taxonomy.index_of(labels))")
    names = None
    if name_embeddings is not None:
        names = np.asarray(name_embeddings, dtype=np.float64)
        if names.ndim != 2 or names.shape[0] != C:
            raise ValueError(f"name_embeddings must be (n_classes={C}, d); got shape {names.shape}")
        nn_ = np.linalg.norm(names, axis=1, keepdims=True)
        if (nn_ == 0).any() or not np.isfinite(names).all():
            raise ValueError("name_embeddings has zero or non-finite rows; re-encode those class texts")
        names = names / nn_

    def part(name: str):
        x = getattr(t, name)
        if x is None:
            return None, np.zeros(C, np.int64)
        P, cnt = _class_means(x.numpy(), getattr(t, f"{name}_mask").numpy(), y, C)
        if names is not None and names.shape[1] == P.shape[1]:
            miss = cnt == 0
            P[miss] = names[miss]
        return P, cnt

    if modality in ("text", "image"):
        P, cnt = part(modality)
        if P is None:
            raise ValueError(f"emb has no {modality} embeddings; use modality="
                             f"{'image' if modality == 'text' else 'text'!r} or 'fused'")
        filled = cnt > 0
        if names is not None and names.shape[1] == P.shape[1]:
            filled = np.ones(C, bool)
        counts = cnt
    else:
        Pt, ct = part("text")
        Pi, ci = part("image")
        pieces = [p for p in (Pt, Pi) if p is not None]
        P = np.concatenate(pieces, axis=1)
        counts = ct + ci
        filled = np.linalg.norm(P, axis=1) > 0
        P[filled] /= np.linalg.norm(P[filled], axis=1, keepdims=True)
    if not filled.all():
        bad = np.flatnonzero(~filled)
        raise ValueError(f"{len(bad)} class(es) have no training item with {modality} embeddings (class indices "
                         f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}) and no fallback; pass "
                         "name_embeddings= (the class-text embeddings of the same text encoder)")
    P = P.astype(np.float32)
    return (P, counts) if return_counts else P


def blend_sources(sources, k: int = 20, taxonomy: Taxonomy | None = None, threshold: float | None = None,
                  block_size: int | None = None, progress: bool | None = None) -> Neighbors:
    """Top-k neighbours under a weighted sum of similarity sources.

    ``s(i, j) = sum_m w_m s_m(i, j) / sum_m w_m``, with ``s_m`` the cosine of a (C, d) embedding
    table (class names, class prototypes, ...) or, for the source ``"tree"``, the tree similarity
    ``1 - d(i, j) / D``. Computed block by block (no C x C matrix).

    Parameters
    ----------
    sources : dict {name: (weight, source)} or list of (weight, source)
        ``source`` is an array (C, d) or the string ``"tree"`` (needs ``taxonomy``); weights >= 0,
        not all 0.
    k, threshold, block_size, progress
        As for :func:`label_neighbors`.
    """
    items = list(sources.items()) if isinstance(sources, dict) else [(f"source {i}", s) for i, s in enumerate(sources)]
    if not items:
        raise ValueError("sources is empty; give at least one (weight, source)")
    parts, total, C = [], 0.0, None
    for name, pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"{name}: each source must be a pair (weight, embeddings or 'tree'), not {pair!r}")
        w, src = pair
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not w >= 0:
            raise ValueError(f"{name}: weight must be a number >= 0, not {w!r}")
        if isinstance(src, str):
            if src != "tree":
                raise ValueError(f"{name}: the only named source is 'tree', not {src!r}")
            if taxonomy is None:
                raise ValueError(f"{name}: the 'tree' source needs taxonomy=...")
            sc = _TreeScorer(taxonomy)
            n, fn = sc.C, sc.similarity
        else:
            x = _as_embeddings(src, f"{name} embeddings")
            n, fn = x.shape[0], (lambda s, e, x=x: x[s:e] @ x.T)
        if C is not None and n != C:
            raise ValueError(f"{name} covers {n} classes but an earlier source covers {C}; give every source in "
                             "class order")
        C = n
        if w > 0:
            parts.append((float(w), fn))
            total += float(w)
    if total == 0:
        raise ValueError("all source weights are 0")
    k = _check_k(k, C)
    if k == 0:
        return _empty(C)

    def score(s, e):
        acc = None
        for w, fn in parts:
            v = (w / total) * fn(s, e)
            acc = v if acc is None else acc + v
        return acc

    idx, val = _blockwise_topk(score, C, k, block_size, progress, "blended neighbours")
    return _apply_threshold(idx, val, threshold)


def class_alpha(neighbors: Neighbors, alpha: float, max_alpha: float = 0.5, top: int | None = None) -> np.ndarray:
    """Per-class smoothing mass that grows with neighbour similarity, at the same mean as ``alpha``.

    ``a_c = min(max_alpha, alpha * s_c / mean_c' s_c')`` with ``s_c`` the mean of ``max(sim, 0)`` over
    the first ``top`` (default all ``k``) real neighbours of ``c``: a class whose neighbours are
    close (strong semantic overlap) is smoothed more, an isolated one less, and one without
    neighbours not at all. When every ``s_c`` is 0, every class with neighbours gets ``alpha``.

    Returns
    -------
    numpy.ndarray (C,) float64 in ``[0, max_alpha]``.
    """
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha!r}")
    if not 0.0 <= float(max_alpha) <= 1.0:
        raise ValueError(f"max_alpha must be in [0, 1], not {max_alpha!r}")
    if not isinstance(neighbors, Neighbors):
        raise TypeError(f"neighbors must be a similarity.Neighbors table, not {type(neighbors).__name__}")
    m = neighbors.k if top is None else _check_k(top, neighbors.k + 1)
    sims = np.clip(neighbors.sims[:, :m].astype(np.float64), 0.0, None)
    valid = neighbors.mask[:, :m]
    n = valid.sum(1)
    s = np.where(n > 0, (sims * valid).sum(1) / np.maximum(n, 1), 0.0)
    mean = s.mean() if len(s) else 0.0
    if mean <= 0:
        return np.where(n > 0, min(a, float(max_alpha)), 0.0)
    return np.minimum(float(max_alpha), a * s / mean)


# ---------------------------------------------------------------------------------- class texts
def class_texts(taxonomy: Taxonomy, template: str = DEFAULT_TEMPLATE, root_name: str = "product") -> list[str]:
    """The text that represents each class for a text encoder.

    Parameters
    ----------
    taxonomy : Taxonomy
    template : str
        ``str.format`` template with any of ``{name}`` (last path segment), ``{parent}`` (the
        parent's name; ``root_name`` for top-level classes), ``{path}`` (the full path, joined
        with the taxonomy separator) and ``{top}`` (the top-level name). The default ``"{path}"``
        was chosen by measurement: its name neighbours have the lowest mean LCA distance on the
        Myntra and Google taxonomies (``docs/class_text_choice.md``).
    root_name : str
        What ``{parent}`` says for a top-level class.

    Returns
    -------
    list[str]
        One text per class, in class order.
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, not {type(template).__name__}")
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    unknown = used - set(TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"class text template {template!r} uses unknown placeholder(s) "
                         f"{sorted(unknown)}; allowed: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
    out = []
    for i in range(taxonomy.n_classes):
        p = taxonomy.node_paths[taxonomy.class_nodes[i]]
        out.append(template.format(name=p[-1], parent=p[-2] if len(p) > 1 else root_name,
                                   path=taxonomy.sep.join(p), top=p[0]))
    return out
