"""The label graph as a person reads it: the k-NN neighbour table as edges, a class's neighbourhood
in hops, example classes chosen from the data, and the strongest cross-branch pairs (each pair once)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._core.contracts import as_k
from ..datasets.taxonomy import Taxonomy
from ._inputs import check_taxonomy, neighbors_of
from .classes import class_index

__all__ = ["neighbor_table", "graph_neighborhood", "example_classes", "cross_branch_pairs"]


def neighbor_table(neighbors, taxonomy: Taxonomy, k: int | None = None, cls=None) -> pd.DataFrame:
    """The k-NN label graph as an edge list.

    Parameters
    ----------
    neighbors : Neighbors or (indices, sims)
        Top-k neighbours per class (padding ``-1``), as from ``sk.similarity.label_neighbors``.
    taxonomy : Taxonomy
    k : int, optional
        Keep the first ``k`` neighbours of each class (all when None).
    cls : int or str, optional
        Only the neighbours of this class.

    Returns
    -------
    pandas.DataFrame
        ``source, target, rank`` (1 = nearest), ``sim, source_label, target_label,
        same_parent, lca_distance``.
    """
    tax = check_taxonomy(taxonomy)
    idx, sims = neighbors_of(neighbors, tax.n_classes)
    if k is not None:
        k = as_k(k)
        idx, sims = idx[:, :k], sims[:, :k]
    rows = np.arange(tax.n_classes) if cls is None else np.array([class_index(cls, tax)])
    src = np.repeat(rows, idx.shape[1])
    tgt = idx[rows].ravel()
    sim = sims[rows].ravel()
    rank = np.tile(np.arange(1, idx.shape[1] + 1), len(rows))
    keep = (tgt >= 0) & (tgt != src)
    src, tgt, sim, rank = src[keep], tgt[keep], sim[keep], rank[keep]
    classes = np.asarray(tax.classes, dtype=object)
    parent = np.array([tax.node_parent[v] for v in tax.class_nodes], dtype=np.int64)
    dist = np.asarray(tax.lca_distance(src, tgt), dtype=np.int64).reshape(len(src))
    return pd.DataFrame({"source": src, "target": tgt, "rank": rank, "sim": sim,
                         "source_label": classes[src], "target_label": classes[tgt],
                         "same_parent": parent[src] == parent[tgt], "lca_distance": dist})


def graph_neighborhood(neighbors, taxonomy: Taxonomy, center, k: int = 5, max_nodes: int = 300,
                       hops: int | None = None) -> np.ndarray:
    """Classes within a few k-NN hops of ``center`` (breadth first, at most ``max_nodes``).

    Edges are followed both ways (a class's neighbours and the classes that list it). ``hops``
    limits the depth (default: as deep as ``max_nodes`` allows). Returns class indices, the
    center first, then by hop distance.
    """
    tax = check_taxonomy(taxonomy)
    idx, _ = neighbors_of(neighbors, tax.n_classes)
    idx = idx[:, : as_k(k)]
    c = class_index(center, tax)
    src = np.repeat(np.arange(tax.n_classes), idx.shape[1])
    tgt = idx.ravel()
    ok = tgt >= 0
    import scipy.sparse as sp

    A = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.int8), (src[ok], tgt[ok])), shape=(tax.n_classes,) * 2)
    A = (A + A.T).tocsr()
    seen = {c: 0}
    order = [c]
    frontier = [c]
    depth = 0
    while frontier and len(order) < max_nodes and (hops is None or depth < hops):
        depth += 1
        nxt = []
        for v in frontier:
            for u in A.indices[A.indptr[v]:A.indptr[v + 1]]:
                u = int(u)
                if u not in seen and len(order) < max_nodes:
                    seen[u] = depth
                    order.append(u)
                    nxt.append(u)
        frontier = nxt
    return np.array(order, dtype=np.int64)


def example_classes(taxonomy: Taxonomy, neighbors, counts=None, cls=None) -> pd.DataFrame:
    """Classes to show as examples, chosen from the data (no class names written in code).

    ``anchor`` is ``cls`` or else the class with most products (``counts``; the first class
    without counts); ``same branch`` is its most similar neighbour under the same parent (else
    under the same top-level category); ``other branch`` its most similar neighbour under another
    top-level category (else under another parent, never an ancestor or descendant of the
    anchor). A role without a candidate is left out. ``chosen_as`` says in words which rule picked
    each one, the fallback included (a "same branch" class at LCA distance 2 is a cousin: no
    neighbour shares the anchor's parent).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``role``: ``class, path, products, sim, lca_distance, chosen_as``.
    """
    tax = check_taxonomy(taxonomy)
    if counts is not None:
        counts = np.asarray(counts.reindex(tax.classes).fillna(0) if isinstance(counts, pd.Series) else counts)
        if counts.shape != (tax.n_classes,):
            raise ValueError(f"counts must have one entry per class ({tax.n_classes}), got shape {counts.shape}")
    a = class_index(cls, tax) if cls is not None else int(np.argmax(counts)) if counts is not None else 0
    nb = neighbor_table(neighbors, tax, cls=a).sort_values(["sim", "rank"], ascending=[False, True], kind="stable")
    top = np.asarray(tax.level(nb["target"].to_numpy(), 1)).astype(str)
    my_top = str(tax.level(np.array([a]), 1)[0])
    k = len(nb)
    rows = [("anchor", a, np.nan, "the class with the most products" if cls is None and counts is not None
             else "the class asked for" if cls is not None else "the first class")]
    same = nb[nb["same_parent"].to_numpy()]
    why = f"its most similar class under the same parent (of its {k} nearest)"
    if not len(same):
        same = nb[top == my_top]
        why = (f"none of its {k} nearest classes shares its parent: its most similar class under the same "
               f"top-level category {my_top!r}")
    if len(same):
        rows.append(("same branch", int(same["target"].iloc[0]), float(same["sim"].iloc[0]), why))
    other = nb[top != my_top]
    why = f"its most similar class under another top-level category (of its {k} nearest)"
    if not len(other):   # all neighbours in one top-level branch: the nearest in another sub-branch,
        t = nb["target"].to_numpy()   # never an ancestor or descendant of the anchor
        lca = np.asarray(tax.lca_depth(np.full(len(t), a), t)).reshape(len(t))
        lineage = lca >= np.minimum(tax.depth(np.full(len(t), a)), tax.depth(t))
        other = nb[~nb["same_parent"].to_numpy() & ~lineage]
        why = (f"all of its {k} nearest classes are under {my_top!r}: its most similar class under another "
               "parent there")
    if len(other):
        rows.append(("other branch", int(other["target"].iloc[0]), float(other["sim"].iloc[0]), why))
    idx = np.array([r[1] for r in rows], dtype=np.int64)
    return pd.DataFrame({"class": idx, "path": [tax.classes[i] for i in idx],
                         "products": counts[idx].astype(np.int64) if counts is not None else np.nan,
                         "sim": [r[2] for r in rows],
                         "lca_distance": np.asarray(tax.lca_distance(np.full(len(idx), a), idx)).reshape(len(idx)),
                         "chosen_as": [r[3] for r in rows]},
                        index=pd.Index([r[0] for r in rows], name="role"))


def cross_branch_pairs(neighbors, taxonomy: Taxonomy, k: int = 5, n: int | None = 10) -> pd.DataFrame:
    """The strongest top-``k`` neighbour pairs whose classes sit under different parents, each pair once.

    The k-NN table is directed (A lists B, B may list A); here ``{A, B}`` is one row with the higher
    similarity of the two directions and ``mutual`` saying whether both list each other. The paths
    are split at the pair's lowest common ancestor, so the columns that tell them apart are short.

    Parameters
    ----------
    neighbors : Neighbors or (indices, sims)
    taxonomy : Taxonomy
    k : int
        Neighbours per class considered.
    n : int or None
        Keep the ``n`` most similar pairs (all when None).

    Returns
    -------
    pandas.DataFrame
        ``a, b`` (class indices, ``a < b``), ``common_ancestor`` (the path both share, ``""`` for
        the root), ``a_below, b_below`` (each path below it), ``sim, mutual, lca_distance``; sorted
        by ``sim`` (then ``a, b``).
    """
    tax = check_taxonomy(taxonomy)
    e = neighbor_table(neighbors, tax, k=k)
    e = e[~e["same_parent"].to_numpy()]
    a = np.minimum(e["source"].to_numpy(), e["target"].to_numpy())
    b = np.maximum(e["source"].to_numpy(), e["target"].to_numpy())
    g = (pd.DataFrame({"a": a, "b": b, "sim": e["sim"].to_numpy(), "lca_distance": e["lca_distance"].to_numpy()})
         .groupby(["a", "b"], sort=False)
         .agg(sim=("sim", "max"), directions=("sim", "size"), lca_distance=("lca_distance", "first"))
         .reset_index().sort_values(["sim", "a", "b"], ascending=[False, True, True], kind="stable"))
    if n is not None:
        g = g.head(as_k(n, "n"))
    ia, ib = g["a"].to_numpy(dtype=np.int64), g["b"].to_numpy(dtype=np.int64)
    depth = np.asarray(tax.lca_depth(ia, ib), dtype=np.int64).reshape(len(ia))
    pa = [tax.classes[i].split(tax.sep) for i in ia]
    pb = [tax.classes[i].split(tax.sep) for i in ib]
    return pd.DataFrame({
        "a": ia, "b": ib,
        "common_ancestor": [tax.sep.join(p[:d]) for p, d in zip(pa, depth)],
        "a_below": [tax.sep.join(p[d:]) for p, d in zip(pa, depth)],
        "b_below": [tax.sep.join(p[d:]) for p, d in zip(pb, depth)],
        "sim": g["sim"].to_numpy(dtype=np.float64), "mutual": g["directions"].to_numpy() > 1,
        "lca_distance": g["lca_distance"].to_numpy(dtype=np.int64),
    })
