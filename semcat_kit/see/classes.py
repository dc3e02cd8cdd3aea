"""Naming and finding classes: an index from whatever a person types (a path, an alias, a short
name), the classes of a branch, short unique display names, and classes found by typing (the
search behind every class box of :mod:`semcat_kit.see.widgets`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..datasets.taxonomy import Taxonomy
from ._inputs import check_taxonomy

__all__ = ["class_index", "select_classes", "short_labels", "search_classes", "elide_paths"]


def class_index(cls, taxonomy: Taxonomy) -> int:
    """Index of a class given as an index, a full path / alias, or a unique short name."""
    C = taxonomy.n_classes
    if isinstance(cls, (int, np.integer)):
        if not 0 <= int(cls) < C:
            raise ValueError(f"class index {cls} is outside [0, {C})")
        return int(cls)
    if not isinstance(cls, str):
        raise TypeError(f"cls must be a class index or a label path, not {type(cls).__name__}")
    try:
        return int(taxonomy.index_of(cls))
    except KeyError:
        pass
    hits = [i for i, n in enumerate(taxonomy.names) if n == cls]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise KeyError(f"class name {cls!r} is ambiguous: {[taxonomy.classes[i] for i in hits]}; give the full path")
    raise KeyError(f"{cls!r} is not a class of this taxonomy; give a full path like {taxonomy.classes[0]!r}")


def select_classes(classes, taxonomy: Taxonomy) -> np.ndarray:
    """Class indices from a node path (all classes in that branch) or a list of indices / paths."""
    tax = check_taxonomy(taxonomy)
    if isinstance(classes, str):
        pre = classes.strip()
        out = [i for i, c in enumerate(tax.classes) if c == pre or c.startswith(pre + tax.sep)]
        if not out:
            raise KeyError(f"no class lies in branch {classes!r}; give a node path like "
                           f"{tax.sep.join(tax.classes[0].split(tax.sep)[:1])!r}")
        return np.array(out, dtype=np.int64)
    out = [class_index(c, tax) for c in classes]
    if not out:
        raise ValueError("classes is empty: give a branch path or some class indices / paths")
    return np.unique(np.array(out, dtype=np.int64))


def short_labels(taxonomy: Taxonomy, idx: Sequence[int]) -> list[str]:
    """Short display names of classes ``idx``, made unique by prefixing parents where names repeat."""
    idx = [int(i) for i in idx]
    labels = [taxonomy.names[i] for i in idx]
    for depth in range(2, taxonomy.max_depth + 1):
        dup = {lab for lab in labels if labels.count(lab) > 1}
        if not dup:
            break
        labels = [taxonomy.sep.join(taxonomy.classes[i].split(taxonomy.sep)[-depth:]) if lab in dup else lab
                  for lab, i in zip(labels, idx)]
    return labels


def search_classes(text: str, classes, limit: int | None = 20) -> list[str]:
    """Class paths matching typed text, best first.

    Ranked: the path itself; then classes whose own name is the text; then those whose name starts
    with it; then every other path containing each typed word (all case-insensitive; class order
    within a rank). Nothing typed matches nothing.

    Parameters
    ----------
    text : str
        What was typed.
    classes : Taxonomy or list of str
        The taxonomy's classes, or some class paths (their name is the part after the last ``>``).
    limit : int or None
        At most this many paths; ``None`` returns every match (its length is the count to report).
    """
    if isinstance(classes, Taxonomy):
        paths, names = classes.classes, classes.names
    else:
        paths = [str(c) for c in classes]
        names = [c.rsplit(">", 1)[-1].strip() for c in paths]
    t = " ".join(str(text).lower().split())
    if not t:
        return []
    words = t.split(" ")
    ranks: list[list[str]] = [[], [], [], []]
    for c, nm in zip(paths, names):
        lc, ln = " ".join(c.lower().split()), nm.lower()
        if lc == t:
            ranks[0].append(c)
        elif ln == t:
            ranks[1].append(c)
        elif ln.startswith(t):
            ranks[2].append(c)
        elif all(w in lc for w in words):
            ranks[3].append(c)
    out = [c for r in ranks for c in r]
    return out if limit is None else out[: int(limit)]


def elide_paths(paths: Sequence[str], max_chars: int = 90, sep: str = " > ") -> list[str]:
    """Display labels for class paths that fit in ``max_chars`` where possible and stay unique.

    A path longer than ``max_chars`` keeps its first level and as many of its last levels as fit,
    with ``…`` for the levels between (``"Arts & Entertainment > … > Fittings & Parts"``); labels
    that would then repeat keep more levels. Paths that fit are shown whole.
    """
    parts = [str(p).split(sep) for p in paths]

    def label(ps: list[str], j: int) -> str:
        return sep.join(ps) if j >= len(ps) - 1 else sep.join([ps[0], "…", *ps[len(ps) - j:]])

    keep = []
    for ps in parts:
        j = len(ps) - 1
        while j > 1 and len(label(ps, j)) > int(max_chars):
            j -= 1
        keep.append(j)
    labels = [label(ps, j) for ps, j in zip(parts, keep)]
    for _ in range(max((len(ps) for ps in parts), default=0)):
        seen: dict[str, int] = {}
        for lab in labels:
            seen[lab] = seen.get(lab, 0) + 1
        dup = [i for i, lab in enumerate(labels) if seen[lab] > 1 and keep[i] < len(parts[i]) - 1]
        if not dup:
            break
        for i in dup:
            keep[i] += 1
            labels[i] = label(parts[i], keep[i])
    return labels
