"""The category tree: classes, paths, ancestors, depth, LCA distance, conflicts.

A :class:`Taxonomy` is a rooted tree of *nodes* (every prefix of every category path, plus a
virtual root at depth 0) and a list of *classes*: the nodes that products are labelled with
(the leaf paths of a catalog, or every node of the Google Product Taxonomy).

Mistake severity follows Bertinetto et al., "Making Better Mistakes" (CVPR 2020): the distance
between two classes is the height of their lowest common ancestor (LCA), counted in tree levels
from the classes up to the LCA. With classes of different depths (a class may be an ancestor of
another in the Google taxonomy) we use the deeper one:

    d(i, j) = max(depth(i), depth(j)) - depth(lca(i, j)),      d(i, i) = 0

where ``depth`` counts path segments ("Apparel" has depth 1, "Apparel > Topwear > Shirts" 3).
For a tree whose classes are all leaves at one depth this is exactly the paper's LCA height.
"""
from __future__ import annotations

import json
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

DEFAULT_SEP = " > "

__all__ = ["Taxonomy", "split_path", "check_spelling", "LABEL_CASE_POLICIES", "LabelCaseWarning", "case_variants",
           "case_canonical", "DEFAULT_SEP", "load_google_taxonomy",
           "TaxonomyMergeWarning", "CONFLICT_POLICIES", "MERGE_MAX_COUNT", "MERGE_MAX_SHARE",
           "MERGE_MAX_PARENT_SHARE", "read_taxonomy", "suggest_classes"]

CONFLICT_POLICIES = ("auto", "majority", "error", "keep")
#: ``on_conflict="auto"`` merges a minority path of a leaf name only when it has at most this many
#: items ...
MERGE_MAX_COUNT = 5
#: ... and less than this share of the name's items (chosen on the Myntra catalog, see
#: docs/guarantees.md: with the parent-share condition below it merges the 16 one-to-five-item
#: strays such as ``Accessories > Belts > Tshirts`` and keeps the 11 consistent alternatives such as
#: ``Personal Care > Eyes > Eyeshadow``, with the same result on the full catalog and on the
#: tutorial subsample).
MERGE_MAX_SHARE = 0.15
#: ... and less than this share of its own parent's items (a parent that exists for the path makes
#: it a category: ``Characters & Brands > Action Man > Toys`` on the Amazon toys catalog).
MERGE_MAX_PARENT_SHARE = 0.5
#: separators that a label column may mix up with the one given (checked by :func:`check_spelling`)
_OTHER_SEPS = (">", "/", "|", "\\", "»", ";")


class TaxonomyMergeWarning(UserWarning):
    """Category paths were merged into another class (:meth:`Taxonomy.from_paths`)."""


def split_path(path: str, sep: str = DEFAULT_SEP, *, where: str = "") -> tuple[str, ...]:
    """Split a category path into stripped segments; raise on empty or blank segments."""
    if not isinstance(path, str):
        raise ValueError(f"category path {path!r}{where} is not a string; give paths like 'A{sep}B{sep}C'")
    parts = tuple(p.strip() for p in path.split(sep.strip() if sep.strip() else sep))
    if not path.strip() or any(not p for p in parts):
        raise ValueError(
            f"category path {path!r}{where} has an empty segment; every level between "
            f"{sep.strip()!r} separators must be named (fix or drop that row)"
        )
    return parts


#: ``label_case`` policies of :meth:`Taxonomy.from_paths` (``catalog_options["label_case"]``)
LABEL_CASE_POLICIES = ("merge", "strict")


class LabelCaseWarning(TaxonomyMergeWarning):
    """A category spelled in another letter case than most of its items was merged into that spelling."""


@dataclass
class CaseVariants:
    """One category spelled in several letter cases: the spellings of its path down to that level.

    ``spellings`` lists ``(path, items, first)`` most frequent first (``first``: where the spelling
    first occurs, or None); the first one is the spelling kept by ``label_case="merge"``."""

    spellings: list

    @property
    def kept(self) -> tuple:
        return self.spellings[0][0]


def case_variants(counts: dict, first_row: dict | None = None) -> list:
    """The categories that ``counts`` (path -> items) spells in several letter cases, shallowest first.

    A category is a path prefix compared with :meth:`str.casefold` (``"fastrack"`` = ``"Fastrack"``)
    under the already chosen spelling of its parent; each is listed once (not once per label below
    it). The kept spelling is the one with most items (ties: the one that occurs first).

    Returns
    -------
    list of CaseVariants
    """
    first_row = first_row or {}
    items: dict = defaultdict(Counter)          # folded prefix -> spelled segment -> items
    first: dict = {}                            # (folded prefix, spelled segment) -> first occurrence
    order: dict = {}
    for k, (p, n) in enumerate(counts.items()):
        r = first_row.get(p)
        for d in range(len(p)):
            key = tuple(x.casefold() for x in p[:d + 1])
            items[key][p[d]] += n
            pos = (_row_key(r), k)
            if (key, p[d]) not in first or pos < order[(key, p[d])]:
                first[(key, p[d])], order[(key, p[d])] = r, pos
    chosen = {key: min(c, key=lambda s: (-c[s], order[(key, s)])) for key, c in items.items()}
    out = []
    for key in sorted((k for k, c in items.items() if len(c) > 1), key=lambda k: (len(k), k)):
        parent = tuple(chosen[key[:d + 1]] for d in range(len(key) - 1))
        c = items[key]
        spell = sorted(c, key=lambda s: (-c[s], order[(key, s)]))
        out.append(CaseVariants([(parent + (s,), int(c[s]), first[(key, s)]) for s in spell]))
    return out


def _row_key(r):
    """Sort key of an occurrence (a row number, or a name ending in one: ``"line 26"``)."""
    if r is None:
        return (1, 0)
    if isinstance(r, (int, np.integer)):
        return (0, int(r))
    m = re.search(r"(\d+)\D*$", str(r))
    return (0, int(m.group(1))) if m else (1, 0)


def case_canonical(counts: dict, first_row: dict | None = None) -> dict:
    """Path -> the spelling ``label_case="merge"`` maps it to (every path of ``counts``; itself when
    no segment has another, more frequent spelling)."""
    groups = case_variants(counts, first_row)
    fold = {tuple(x.casefold() for x in g.kept): g.kept[-1] for g in groups}
    out = {}
    for p in counts:
        out[p] = tuple(fold.get(tuple(x.casefold() for x in p[:d + 1]), p[d]) for d in range(len(p)))
    return out


def case_message(groups: list, sep: str, first_row_word: str = "first at") -> str:
    """The refusal of ``label_case="strict"``: every category spelled several ways, once, with its
    item counts and where each spelling first occurs, and what to do."""
    def one(path, n, r):
        where = f", {first_row_word} {r if isinstance(r, str) else f'row {r}'}" if r is not None else ""
        return f"{sep.join(path)!r} ({n} item{'s' if n != 1 else ''}{where})"
    shown = [" vs ".join(one(*s) for s in g.spellings) for g in groups[:10]]
    more = f"; ... and {len(groups) - 10} more" if len(groups) > 10 else ""
    fix = groups[0].spellings
    return (f"the labels spell {len(groups)} categor{'y' if len(groups) == 1 else 'ies'} in different letter case: "
            + "; ".join(shown) + more + f". Fix: write each category one way in the file (e.g. "
            f"{sep.join(fix[1][0])!r} as {sep.join(fix[0][0])!r}), or leave label_case at 'merge' (the default; "
            "catalog_options={..., 'label_case': 'merge'}) to merge every spelling into its most frequent one, "
            "with a warning per merge")



def check_spelling(counts: dict, first_row: dict | None = None, sep: str = DEFAULT_SEP) -> None:
    """Refuse a label column that spells one category two ways.

    Two cases would otherwise silently become extra classes:

    * letter case: ``"apparel > topwear"`` beside ``"Apparel > Topwear"`` (any level; :meth:`Taxonomy.from_paths`
      merges those by default, ``label_case="merge"``, and calls this on the merged paths);
    * another separator: ``"Apparel / Topwear / Shirts"`` (or ``"Apparel > Topwear / Shirts"``)
      beside ``"Apparel > Topwear > ..."`` -- re-split on the other separator the label becomes a
      path whose parent is an inner node of the other labels; or every label is one segment that
      contains the same other separator (the wrong ``sep`` was given).

    Parameters
    ----------
    counts : dict
        Path (tuple of segments) -> number of items.
    first_row : dict, optional
        Path -> where it first occurs (a row number or a name such as ``"line 26"``; named in the message).
    sep : str

    Raises
    ------
    ValueError
        Naming the spellings, their item counts and a row of each.
    """
    first_row = first_row or {}

    def desc(p):
        r = first_row.get(p)
        n = counts[p]
        return f"{sep.join(p)!r} ({n} item{'s' if n != 1 else ''}{f', first at row {r}' if r is not None else ''})"

    # ---- letter case, at every level
    groups = case_variants(counts, first_row)
    if groups:
        raise ValueError(case_message(groups, sep, first_row_word="first at"))
    # ---- another separator
    own = sep.strip() or sep
    others = [c for c in _OTHER_SEPS if c not in own]
    if not others:
        return
    inner = {tuple(x.casefold() for x in p[:d]) for p in counts for d in range(1, len(p))}
    pattern = re.compile("|".join(re.escape(c) for c in [own] + others))
    bad = []
    for p in counts:
        label = sep.join(p)
        if not any(c in label for c in others):
            continue
        segs = [x.strip() for x in pattern.split(label)]
        if len(segs) > len(p) and all(segs) and tuple(x.casefold() for x in segs[:-1]) in inner:
            bad.append((p, segs))
    if bad:
        shown = "; ".join(f"{desc(p)} looks like {(sep).join(segs)!r}" for p, segs in bad[:4])
        raise ValueError(f"the labels mix separators: {len(bad)} label(s) use another separator than {sep!r}: "
                         f"{shown}. Write every path with {sep!r} (e.g. catalog['label'].str.replace(' / ', "
                         f"{sep!r})) so one category is not split into two classes")
    if all(len(p) == 1 for p in counts) and len(counts) > 1:
        for c in others:
            if all(c in p[0] for p in counts):
                ex = next(iter(counts))
                raise ValueError(f"every label is a single segment containing {c!r} (e.g. {desc(ex)}): the "
                                 f"paths seem to use the separator {c!r}, not {sep!r}; pass sep=' {c} ' (or the "
                                 "exact separator) so the category tree is not flat")


@dataclass
class Taxonomy:
    """A category tree with classes at some of its nodes.

    Build one with :meth:`from_paths` (catalog labels) or :meth:`from_google_taxonomy`.

    Attributes
    ----------
    classes : list[str]
        Full category path of each class, e.g. ``"Apparel > Topwear > Shirts"``; class ``i`` is
        output ``i`` of every model trained on this taxonomy.
    names : list[str]
        Short display name of each class (its last path segment).
    conflicts : pandas.DataFrame
        Paths whose last segment also appears under another parent, and how they were resolved
        (columns ``name, path, count, resolved_to, kept``). Empty when the input was a clean tree.
    aliases : dict[str, str]
        Paths that :meth:`index_of` accepts and maps to another class (the minority paths of a
        conflict resolved by ``on_conflict="majority"``, the letter-case variants merged by
        ``label_case="merge"``).
    case_merges : pandas.DataFrame
        The spellings merged by letter case (``path, count, resolved_to, resolved_count, first``).
    """

    node_paths: list[tuple[str, ...]]
    node_parent: np.ndarray
    class_nodes: np.ndarray
    sep: str = DEFAULT_SEP
    aliases: dict[str, str] = field(default_factory=dict)
    conflicts: pd.DataFrame = field(default_factory=lambda: _empty_conflicts())
    case_merges: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_CASE_COLUMNS))

    def __post_init__(self) -> None:
        self.node_parent = np.asarray(self.node_parent, dtype=np.int64)
        self.class_nodes = np.asarray(self.class_nodes, dtype=np.int64)
        n = len(self.node_paths)
        self.node_depth = np.array([len(p) for p in self.node_paths], dtype=np.int64)
        self.max_depth = int(self.node_depth.max()) if n else 0
        # anc[n, l] = id of the ancestor of node n at depth l (l = 0 is the root), -1 below depth
        anc = np.full((n, self.max_depth + 1), -1, dtype=np.int64)
        for v in np.argsort(self.node_depth, kind="stable"):
            p = self.node_parent[v]
            if p >= 0:
                anc[v] = anc[p]
            anc[v, self.node_depth[v]] = v
        self._anc = anc
        self._class_anc = anc[self.class_nodes]
        # compact copy without the root column for lca_depth (int16 ids for < 32k nodes: 4x less
        # memory traffic than int64 in the gathers that dominate lca_distance)
        small = np.int16 if n < np.iinfo(np.int16).max else np.int32 if n < np.iinfo(np.int32).max else np.int64
        self._class_anc_c = np.ascontiguousarray(self._class_anc[:, 1:].astype(small))
        self._class_depth = self.node_depth[self.class_nodes]
        self.classes = [self.sep.join(self.node_paths[v]) for v in self.class_nodes]
        self.names = [self.node_paths[v][-1] if self.node_paths[v] else "" for v in self.class_nodes]
        self._index = {c: i for i, c in enumerate(self.classes)}
        if len(self._index) != len(self.classes):
            dup = [c for c, k in Counter(self.classes).items() if k > 1]
            raise ValueError(f"duplicate classes {dup[:5]}; each category path must be listed once")
        self._node_index = {p: i for i, p in enumerate(self.node_paths)}
        children = defaultdict(list)
        for v, p in enumerate(self.node_parent):
            if p >= 0:
                children[int(p)].append(v)
        self._children = children

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_paths(
        cls,
        labels: Iterable[str],
        sep: str = DEFAULT_SEP,
        on_conflict: str = "auto",
        merge_max_count: int = MERGE_MAX_COUNT,
        merge_max_share: float = MERGE_MAX_SHARE,
        merge_max_parent_share: float = MERGE_MAX_PARENT_SHARE,
        label_case: str = "merge",
        rows: Sequence | None = None,
    ) -> "Taxonomy":
        """Build the taxonomy whose classes are the distinct label paths.

        Parameters
        ----------
        labels : iterable of str
            Full category paths, one per product (repeats are counted).
        sep : str
            Path separator.
        on_conflict : {"auto", "majority", "error", "keep"}
            What to do when one leaf name sits under several parents (e.g. ``Belts`` under
            ``Apparel > Topwear`` 3 times and under ``Accessories > Belts`` 810 times).
            ``"auto"`` (default) keeps distinct paths as distinct classes (real taxonomies repeat
            leaf names: ``Men > Shoes``, ``Women > Shoes``) *unless* a minority path looks like
            label noise -- a few items misfiled into a parent that holds other categories: at most
            ``merge_max_count`` items, less than ``merge_max_share`` of that name's items, fewer
            than its most frequent path, and less than ``merge_max_parent_share`` of its own
            parent's items (a parent that exists for this path, such as ``Characters & Brands >
            Action Man > Toys``, makes it a category of its own); such a path is mapped to the
            name's most frequent path.
            ``"majority"`` maps every minority path to the most frequent one; ``"error"`` raises;
            ``"keep"`` keeps every path as its own class. Every merge is listed in
            :attr:`conflicts` and :attr:`aliases` (accepted by :meth:`index_of`) and announced by a
            :class:`TaxonomyMergeWarning` naming the paths and their item counts.
        merge_max_count, merge_max_share, merge_max_parent_share : int, float, float
            The noise rule of ``on_conflict="auto"`` (defaults 5 items, 15% and 50%, chosen on the
            Myntra and Amazon catalogs: see ``docs/guarantees.md``).
        label_case : {"merge", "strict"}
            Spellings of one category that differ only in letter case (``"Watches > fastrack"``
            beside ``"Watches > Fastrack"``, at any level, :func:`case_variants`): ``"merge"``
            (default) maps each to the spelling with most items (an alias, listed by
            :meth:`merges` with reason ``"letter case"``), with one :class:`LabelCaseWarning` per
            merged spelling; ``"strict"`` refuses them (every such category listed once).
        rows : sequence, optional
            How messages name each label's position (``rows[i]``, e.g. ``"line 26"`` of a file; read
            only for a path's first occurrence); default ``"row i"`` (0-based position in ``labels``).

        Raises
        ------
        ValueError
            An empty label or segment; labels that mix separators (``"A / B"`` beside
            ``"A > B"``); with ``label_case="strict"``, one category in different letter case
            (``"a > b"`` beside ``"A > B"``): the message names the labels, their counts and where
            each first occurs.
        """
        if on_conflict not in CONFLICT_POLICIES:
            raise ValueError(f"on_conflict must be one of {CONFLICT_POLICIES}, not {on_conflict!r}")
        if label_case not in LABEL_CASE_POLICIES:
            raise ValueError(f"label_case must be one of {LABEL_CASE_POLICIES}, not {label_case!r}")
        counts: Counter = Counter()
        first_row: dict[tuple[str, ...], object] = {}
        def name(row):   # only for the first occurrence of a path, or an error
            return row if rows is None else str(rows[row])
        for row, lab in enumerate(labels):
            try:
                p = split_path(lab, sep)
            except ValueError:
                split_path(lab, sep, where=f" ({f'row {row}' if rows is None else rows[row]})")
                raise
            counts[p] += 1
            if p not in first_row:
                first_row[p] = name(row)
        if not counts:
            raise ValueError("no labels given: a taxonomy needs at least one category path")
        case_aliases, case_rows = {}, []
        groups = case_variants(counts, first_row)
        if groups and label_case == "strict":
            raise ValueError(case_message(groups, sep))
        if groups:
            canon = case_canonical(counts, first_row)
            merged: Counter = Counter()
            merged_first: dict = {}
            for p, n in counts.items():
                q = canon[p]
                merged[q] += n
                if q not in merged_first or _row_key(first_row.get(p)) < _row_key(merged_first[q]):
                    merged_first[q] = first_row.get(p)
                if q != p:
                    case_aliases[sep.join(p)] = q
            for g in groups:
                (kp, kn, _), rest = g.spellings[0], g.spellings[1:]
                for path, n, r in rest:
                    case_rows.append(dict(path=sep.join(path), count=n, resolved_to=sep.join(kp), resolved_count=kn,
                                          first=r))
                    where = f", first at {r if isinstance(r, str) else f'row {r}'}" if r is not None else ""
                    warnings.warn(f"letter case: {sep.join(path)!r} ({n} item{'s' if n != 1 else ''}{where}) merged "
                                  f"into {sep.join(kp)!r} ({kn} item{'s' if kn != 1 else ''}), the same category "
                                  "spelled as most of its items are (label_case='strict' refuses instead)",
                                  LabelCaseWarning, stacklevel=2)
            counts, first_row = merged, merged_first
        check_spelling(counts, first_row, sep)
        by_name: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        in_parent: Counter = Counter()
        for p in counts:
            by_name[p[-1]].append(p)
            in_parent[p[:-1]] += counts[p]
        conflict_rows, aliases, keep_paths = [], {}, []
        for name, paths in by_name.items():
            if len(paths) == 1:
                keep_paths.append(paths[0])
                continue
            paths = sorted(paths, key=lambda p: (-counts[p], p))
            if on_conflict == "error":
                desc = ", ".join(f"{sep.join(p)!r} ({counts[p]} items)" for p in paths)
                raise ValueError(
                    f"category {name!r} sits under several parents: {desc}. Fix the labels, or pass "
                    "on_conflict='auto' (merge only noise-like minority paths), 'majority' (map to the "
                    "most frequent) or 'keep' (separate classes)"
                )
            winner = paths[0]
            total = sum(counts[p] for p in paths)
            for p in paths:
                if p == winner or on_conflict == "keep":
                    kept = True
                elif on_conflict == "majority":
                    kept = False
                else:   # auto: merge only a path that looks like label noise
                    kept = not (counts[p] <= merge_max_count and counts[p] < merge_max_share * total
                                and counts[p] < counts[winner]
                                and counts[p] < merge_max_parent_share * in_parent[p[:-1]])
                resolved = sep.join(p) if kept else sep.join(winner)
                conflict_rows.append(dict(name=name, path=sep.join(p), count=counts[p],
                                          resolved_to=resolved, kept=kept))
                if kept:
                    keep_paths.append(p)
                else:
                    aliases[sep.join(p)] = resolved
        conflicts = pd.DataFrame(conflict_rows, columns=_CONFLICT_COLUMNS)
        if len(conflicts):
            conflicts = conflicts.sort_values(["name", "count"], ascending=[True, False], ignore_index=True)
        tax = cls._from_class_paths(sorted(keep_paths), sep)
        tax.conflicts = conflicts
        tax.case_merges = pd.DataFrame(case_rows, columns=_CASE_COLUMNS)
        if aliases:
            warnings.warn(tax.merge_message(), TaxonomyMergeWarning, stacklevel=2)
        for k, q in case_aliases.items():       # a case variant goes where its merged spelling goes
            aliases.setdefault(k, aliases.get(sep.join(q), sep.join(q)))
        tax.aliases = aliases
        return tax

    def merges(self) -> pd.DataFrame:
        """The category paths merged into another class (columns ``path, count, resolved_to,
        resolved_count, reason``): the spellings merged by letter case (``reason`` ``"letter case"``,
        ``label_case="merge"``), then the rows of :attr:`conflicts` whose path was merged into the
        most frequent path of its name (``"parent"``)."""
        cols = ["path", "count", "resolved_to", "resolved_count", "reason"]
        case = getattr(self, "case_merges", None)
        parts = []
        if case is not None and len(case):
            parts.append(pd.DataFrame({"path": case["path"].tolist(), "count": case["count"].astype(int).tolist(),
                                       "resolved_to": case["resolved_to"].tolist(),
                                       "resolved_count": case["resolved_count"].astype(int).tolist(),
                                       "reason": "letter case"}))
        c = self.conflicts
        if c is not None and len(c):
            kept_counts = dict(zip(c.loc[c["kept"].astype(bool), "path"], c.loc[c["kept"].astype(bool), "count"]))
            m = c[~c["kept"].astype(bool)]
            if len(m):
                parts.append(pd.DataFrame({"path": m["path"].tolist(), "count": m["count"].astype(int).tolist(),
                                           "resolved_to": m["resolved_to"].tolist(),
                                           "resolved_count": [int(kept_counts.get(r, 0)) for r in m["resolved_to"]],
                                           "reason": "parent"}))
        if not parts:
            return pd.DataFrame(columns=cols)
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def merge_message(self, limit: int | None = None) -> str:
        """One line per merged path: ``'B > X' (1 item) merged into 'A > X' (30 items)``, the
        letter-case merges first."""
        m = self.merges()
        if not len(m):
            return "no category paths were merged"
        out = []
        for reason, head, tail in (
                ("letter case", "category spelling(s) differ only in letter case from the spelling of most of their "
                 "items and were merged into it (catalog_options label_case='strict' refuses instead):",
                 "taxonomy.merges()"),
                ("parent", "category path(s) sit under another parent than most items of the same name and were "
                 "merged into that name's most frequent path (see taxonomy.conflicts; pass on_conflict='keep' to "
                 "keep them as classes):", "taxonomy.conflicts")):
            part = m[m["reason"] == reason]
            if not len(part):
                continue
            rows = [f"  {r.path!r} ({r.count} item{'s' if r.count != 1 else ''}) merged into {r.resolved_to!r} "
                    f"({r.resolved_count} item{'s' if r.resolved_count != 1 else ''})" for r in part.itertuples()]
            more = ""
            if limit is not None and len(rows) > limit:
                more = f"\n  ... and {len(rows) - limit} more (see {tail})"
                rows = rows[:limit]
            out.append(f"{len(part)} {head}\n" + "\n".join(rows) + more)
        return "\n".join(out)

    @classmethod
    def from_google_taxonomy(cls, path: str | Path) -> "Taxonomy":
        """Load the Google Product Taxonomy file (``ID - A > B > C`` lines); every node is a class."""
        df = load_google_taxonomy(path)
        return cls._from_class_paths(list(df["path"].map(lambda s: tuple(s.split(DEFAULT_SEP)))), DEFAULT_SEP)

    @classmethod
    def _from_class_paths(cls, class_paths: Sequence[tuple[str, ...]], sep: str) -> "Taxonomy":
        node_index: dict[tuple[str, ...], int] = {(): 0}
        parents = [-1]
        for p in class_paths:
            for d in range(1, len(p) + 1):
                pre = p[:d]
                if pre not in node_index:
                    node_index[pre] = len(parents)
                    parents.append(node_index[pre[:-1]])
        node_paths = list(node_index)
        return cls(node_paths=node_paths, node_parent=np.array(parents),
                   class_nodes=np.array([node_index[tuple(p)] for p in class_paths]), sep=sep)

    # ------------------------------------------------------------------ lookups
    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Taxonomy({self.n_classes} classes, {len(self.node_paths) - 1} nodes, "
                f"depth {self.max_depth}, {len(self.aliases)} aliases)")

    def _canonical(self, lab):
        """``lab`` as :meth:`from_paths` stores it (segments stripped, joined by ``sep``), or ``lab``."""
        if isinstance(lab, str) and lab not in self._index and lab not in self.aliases:
            try:
                return self.sep.join(split_path(lab, self.sep))
            except ValueError:
                return lab
        return lab

    def resolve(self, labels: Iterable[str]) -> list[str]:
        """Map labels to class paths (aliases to their class); unknown labels are returned as they are."""
        out = []
        for lab in labels:
            c = self._canonical(lab)
            out.append(self.aliases.get(c, c) if isinstance(c, str) and (c in self._index or c in self.aliases)
                       else lab)
        return out

    def index_of(self, labels: str | Iterable[str]) -> np.ndarray | int:
        """Class index of each label (full path or alias); raises naming the unknown labels."""
        if isinstance(labels, str):
            return int(self.index_of([labels])[0])
        labels = list(labels)
        out = np.empty(len(labels), dtype=np.int64)
        unknown = []
        for k, lab in enumerate(labels):
            lab2 = self.aliases.get(lab, lab) if isinstance(lab, str) else lab
            i = self._index.get(lab2, -1)
            if i < 0:  # spelled with other spacing around the separator ("A>B" for "A > B")?
                c = self._canonical(lab)
                i = self._index.get(self.aliases.get(c, c), -1) if isinstance(c, str) else -1
            if i < 0:
                unknown.append((k, lab))
            out[k] = i
        if unknown:
            shown = ", ".join(f"row {k}: {lab!r}" for k, lab in unknown[:5])
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise KeyError(f"{len(unknown)} label(s) are not classes of this taxonomy: {shown}{more}. "
                           "Build the taxonomy from these labels or drop those rows.")
        return out

    def depth(self, i) -> np.ndarray | int:
        """Number of path segments of class ``i`` (vectorised)."""
        d = self._class_depth[np.asarray(i)]
        return int(d) if np.ndim(d) == 0 else d

    def parent(self, i: int) -> str | None:
        """Full path of the parent node of class ``i`` (``None`` for a top-level class)."""
        p = self.node_parent[self.class_nodes[i]]
        return self.sep.join(self.node_paths[p]) if p > 0 else None

    def ancestors(self, i: int, include_self: bool = False) -> list[str]:
        """Full paths of the ancestors of class ``i``, top level first (the root is not listed)."""
        p = self.node_paths[self.class_nodes[i]]
        stop = len(p) + 1 if include_self else len(p)
        return [self.sep.join(p[:d]) for d in range(1, stop)]

    def children(self, path_or_index: str | int) -> list[str]:
        """Full paths of the child nodes of a class index or of any node path ('' is the root)."""
        if isinstance(path_or_index, (int, np.integer)):
            v = int(self.class_nodes[path_or_index])
        else:
            key = tuple(path_or_index.split(self.sep)) if path_or_index else ()
            if key not in self._node_index:
                raise KeyError(f"{path_or_index!r} is not a node of this taxonomy")
            v = self._node_index[key]
        return [self.sep.join(self.node_paths[c]) for c in self._children.get(v, [])]

    def level(self, i, level: int):
        """Name of the ancestor of class ``i`` at depth ``level`` (1 = top level), vectorised.

        Classes shallower than ``level`` give their own name (their deepest level).
        """
        if level < 1:
            raise ValueError("level counts from 1 (the top level)")
        i_arr = np.asarray(i)
        lv = np.minimum(level, self._class_depth[i_arr])
        nodes = self._class_anc[i_arr, lv]
        if np.ndim(nodes) == 0:
            return self.node_paths[int(nodes)][-1]
        return np.array([self.node_paths[n][-1] for n in nodes.ravel()], dtype=object).reshape(nodes.shape)

    def level_index(self, i, level: int) -> np.ndarray:
        """Node id of the ancestor of class ``i`` at depth ``level`` (the class itself if shallower)."""
        i_arr = np.asarray(i)
        return self._class_anc[i_arr, np.minimum(level, self._class_depth[i_arr])]

    def ancestor_matrix(self) -> np.ndarray:
        """(C, max_depth + 1) node ids of each class's ancestors by depth (-1 below the class)."""
        return self._class_anc.copy()

    # ------------------------------------------------------------------ distances
    def lca_depth(self, i, j) -> np.ndarray:
        """Depth of the lowest common ancestor of classes ``i`` and ``j`` (broadcast arrays)."""
        i, j = np.broadcast_arrays(np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64))
        fi, fj = i.ravel(), j.ravel()
        out = np.empty(fi.shape, dtype=np.int64)
        anc = self._class_anc_c
        # ancestors agree on a prefix of levels; count agreeing non-root levels, in chunks so the
        # temporaries stay small (memory O(chunk * depth), whatever the number of pairs)
        for s in range(0, fi.size, _LCA_CHUNK):
            a, b = anc[fi[s:s + _LCA_CHUNK]], anc[fj[s:s + _LCA_CHUNK]]
            out[s:s + _LCA_CHUNK] = np.count_nonzero((a == b) & (a >= 0), axis=1)
        return out.reshape(i.shape)

    def lca_distance(self, i, j) -> np.ndarray:
        """Mistake severity between classes: height of their LCA (0 for the same class).

        ``d(i, j) = max(depth(i), depth(j)) - depth(lca(i, j))`` (Bertinetto et al. 2020),
        vectorised over broadcastable index arrays, O(len * depth) memory: never C x C.
        """
        i, j = np.broadcast_arrays(np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64))
        d = np.maximum(self._class_depth[i], self._class_depth[j]) - self.lca_depth(i, j)
        return d if d.ndim else int(d)

    def distance_matrix(self, max_classes: int = 20_000) -> np.ndarray:
        """Dense (C, C) int8 LCA-distance matrix; for small taxonomies (refuses C > ``max_classes``)."""
        C = self.n_classes
        if C > max_classes:
            raise MemoryError(f"a dense {C}x{C} matrix is too large; use lca_distance on index arrays "
                              f"or raise max_classes")
        out = np.empty((C, C), dtype=np.int8)
        cols = np.arange(C)
        block = max(1, 2_000_000 // max(C, 1))
        for s in range(0, C, block):
            rows = np.arange(s, min(C, s + block))
            out[rows] = self.lca_distance(rows[:, None], cols[None, :])
        return out

    # ------------------------------------------------------------------ export
    def derived(self, key: str, build):
        """A structure computed from the tree by ``build(self)``, built once per taxonomy object and kept.

        The layers above keep their per-taxonomy operators here (``decoding``'s CRM operators,
        ``hedging``'s :class:`~semcat_kit.judge.hedging.HedgeTree`) instead of on private attributes.
        """
        cache = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache[key] = build(self)
        return cache[key]

    def to_networkx(self):
        """The tree as a ``networkx.DiGraph`` (edges parent -> child, nodes named by full path;
        the root is ``""``; attributes ``depth``, ``name``, ``is_class``, ``class_index``)."""
        import networkx as nx

        g = nx.DiGraph()
        cls_of = {int(v): i for i, v in enumerate(self.class_nodes)}
        for v, p in enumerate(self.node_paths):
            g.add_node(self.sep.join(p), depth=len(p), name=p[-1] if p else "",
                       is_class=v in cls_of, class_index=cls_of.get(v, -1))
        for v, par in enumerate(self.node_parent):
            if par >= 0:
                g.add_edge(self.sep.join(self.node_paths[par]), self.sep.join(self.node_paths[v]))
        return g

    def to_dict(self) -> dict:
        """JSON-serialisable description (classes, separator, aliases) that :meth:`from_dict` rebuilds."""
        return {"sep": self.sep, "classes": list(self.classes), "aliases": dict(self.aliases)}

    @classmethod
    def from_dict(cls, d: dict) -> "Taxonomy":
        """Rebuild a taxonomy from :meth:`to_dict` (raises ``ValueError`` naming a malformed key)."""
        if not isinstance(d, dict):
            raise ValueError(f"a taxonomy description is a dict with 'classes', not a {type(d).__name__}")
        if not isinstance(d.get("classes"), list) or not d["classes"]:
            raise ValueError("key 'classes' must be a non-empty list of category paths")
        sep = d.get("sep", DEFAULT_SEP)
        if not isinstance(sep, str) or not sep:
            raise ValueError(f"key 'sep' must be a non-empty string, not {sep!r}")
        aliases = d.get("aliases", {})
        if not isinstance(aliases, dict) or not all(isinstance(k, str) and v in d["classes"]
                                                    for k, v in aliases.items()):
            raise ValueError("key 'aliases' must map label paths to listed classes")
        tax = cls._from_class_paths([split_path(c, sep) for c in d["classes"]], sep)
        tax.aliases = dict(d.get("aliases", {}))
        return tax

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        from .._core.io import atomic_write_text

        atomic_write_text(Path(path).expanduser(), json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Taxonomy":
        """Read a file written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            The file is not a taxonomy written by :meth:`save` (not UTF-8 JSON, truncated, missing
            ``classes``, wrong types): the message names the file and what to do.
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"no taxonomy file at {str(p)!r} (write one with Taxonomy.save)")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return cls.from_dict(d)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{str(p)!r} is not a taxonomy file written by Taxonomy.save "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r}); "
                             "re-create it with Taxonomy.from_paths(...).save(path)") from None


_CONFLICT_COLUMNS = ["name", "path", "count", "resolved_to", "kept"]
_CASE_COLUMNS = ["path", "count", "resolved_to", "resolved_count", "first"]
_LCA_CHUNK = 1 << 16


def _empty_conflicts() -> pd.DataFrame:
    return pd.DataFrame(columns=_CONFLICT_COLUMNS)


# ---------------------------------------------------------------------------------- google
_GOOGLE_LINE = re.compile(r"^\s*(\d+)\s+-\s+(.*?)\s*$")


def load_google_taxonomy(path) -> pd.DataFrame:
    """Read the Google Product Taxonomy file with ids (``taxonomy-with-ids.<locale>.txt``).

    Lines look like ``1604 - Apparel & Accessories > Clothing``; lines starting with ``#`` (the
    version comment) and blank lines are skipped.

    Returns
    -------
    pandas.DataFrame
        ``id`` (int64), ``path`` (``"A > B > C"``), ``depth`` (number of segments), ``name`` (last
        segment), in file order.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        A malformed line, an empty path segment, or a duplicate id/path; the message names the file
        and the line number.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"Google taxonomy file {str(p)!r} is a folder; give the file taxonomy-with-ids.en-US.txt "
                         "itself")
    if not p.is_file():
        raise FileNotFoundError(f"Google taxonomy file {str(p)!r} does not exist; download "
                                "taxonomy-with-ids.en-US.txt from Google Merchant Center help")
    ids, paths, depths, names = [], [], [], []
    seen_id: dict[int, int] = {}
    seen_path: dict[str, int] = {}
    with open(p, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            m = _GOOGLE_LINE.match(s)
            if not m or not m.group(2):
                raise ValueError(f"{p}, line {lineno}: expected 'ID - Level1 > Level2 > ...', got {s[:100]!r}")
            segs = [x.strip() for x in m.group(2).split(">")]
            if any(not x for x in segs):
                raise ValueError(f"{p}, line {lineno}: empty category name in {m.group(2)!r}")
            gid = int(m.group(1))
            full = DEFAULT_SEP.join(segs)
            if gid in seen_id:
                raise ValueError(f"{p}, line {lineno}: id {gid} already used on line {seen_id[gid]}")
            if full in seen_path:
                raise ValueError(f"{p}, line {lineno}: category {full!r} already listed on line {seen_path[full]}")
            seen_id[gid] = seen_path[full] = lineno
            ids.append(gid)
            paths.append(full)
            depths.append(len(segs))
            names.append(segs[-1])
    if not ids:
        raise ValueError(f"{p} holds no categories (expected lines like '1 - Animals & Pet Supplies')")
    return pd.DataFrame({"id": np.array(ids, dtype=np.int64), "path": paths,
                         "depth": np.array(depths, dtype=np.int64), "name": names})


# ---------------------------------------------------------------------------------- external taxonomies
def read_taxonomy(source, sep: str = DEFAULT_SEP) -> "Taxonomy":
    """An external taxonomy, whatever form it comes in; its classes are the category set.

    Parameters
    ----------
    source : Taxonomy, list of str, or path
        A :class:`Taxonomy` (returned as is); a list of category paths (each one a class, their
        prefixes become the tree's inner nodes); or a file: the Google Product Taxonomy
        (``ID - A > B > C`` lines; every node a class), a saved :meth:`Taxonomy.save` JSON file,
        or a ``.txt`` file with one category path per line (``#`` lines skipped).
    sep : str
        Separator of the paths of a list or a ``.txt`` file.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is none of these forms (the message names it and what was expected).
    """
    if isinstance(source, Taxonomy):
        return source
    if isinstance(source, (list, tuple, pd.Series, np.ndarray)):
        paths = list(dict.fromkeys(str(p) for p in source))
        if not paths:
            raise ValueError("taxonomy= is an empty list; give category paths like 'A > B > C'")
        return Taxonomy._from_class_paths([split_path(p, sep, where=f" (taxonomy= item {k})")
                                           for k, p in enumerate(paths)], sep)
    if not isinstance(source, (str, Path)):
        raise TypeError(f"taxonomy= must be a Taxonomy, a list of category paths or a file path, "
                        f"not {type(source).__name__}")
    p = Path(source).expanduser()
    if p.is_dir():
        raise ValueError(f"taxonomy= {str(p)!r} is a folder, not a taxonomy file; give the file itself (a Google "
                         "taxonomy .txt, a saved Taxonomy .json or a .txt of category paths)")
    if not p.is_file():
        raise FileNotFoundError(f"taxonomy file {str(p)!r} does not exist; check the path")
    expected = ("a Google taxonomy file ('ID - A > B > C' lines), a saved Taxonomy (.json) or a .txt file "
                "with one category path per line")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"taxonomy file {str(p)!r} is not a taxonomy (not UTF-8 text); give {expected}") from None
    lines = [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]
    if not lines:
        raise ValueError(f"taxonomy file {str(p)!r} holds no categories; give {expected}")
    if p.suffix.lower() == ".json":
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or not isinstance(d.get("classes"), list):
                raise ValueError
        except ValueError:
            raise ValueError(f"taxonomy file {str(p)!r} is JSON but not a saved Taxonomy (no 'classes' list); "
                             f"give {expected}") from None
        return Taxonomy.from_dict(d)
    if all(_GOOGLE_LINE.match(s) for s in lines[:50]):
        return Taxonomy.from_google_taxonomy(p)
    if p.suffix.lower() != ".txt":
        raise ValueError(f"taxonomy file {str(p)!r} is not a taxonomy (its first line {lines[0][:80]!r} is not "
                         f"'ID - A > B'); give {expected}")
    return read_taxonomy([s for s in lines], sep=sep)


def suggest_classes(labels: Sequence[str], taxonomy: "Taxonomy", n: int = 3) -> dict[str, list[str]]:
    """Closest taxonomy paths for each distinct label (that is not a class, typically).

    Similarity: cosine of TF-IDF character 3-5-gram vectors of the lower-cased texts, averaged over
    the whole path and the last segment, so ``"Toys > Puzzles"`` finds ``"Toys & Games > Puzzles"``.
    Vectorised (one sparse product per 512 labels), so thousands of classes take well under a
    second. Returns ``label -> [paths, best first]``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    uniq = list(dict.fromkeys(str(x) for x in labels))
    if not uniq:
        return {}
    sep = taxonomy.sep.strip() or taxonomy.sep
    leaf = [u.split(sep)[-1].strip() for u in uniq]
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=True, sublinear_tf=True)
    vec.fit(list(taxonomy.classes) + uniq)
    cp, cn = vec.transform(taxonomy.classes), vec.transform(taxonomy.names)
    out = {}
    for s in range(0, len(uniq), 512):
        lp, ln = vec.transform(uniq[s:s + 512]), vec.transform(leaf[s:s + 512])
        sim = ((lp @ cp.T) + (ln @ cn.T)).toarray() / 2
        top = np.argsort(-sim, axis=1, kind="stable")[:, :n]
        for r, u in enumerate(uniq[s:s + 512]):
            out[u] = [taxonomy.classes[int(j)] for j in top[r] if sim[r, j] > 0]
    return out
