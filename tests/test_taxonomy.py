"""Tests for semcat_kit.datasets.taxonomy on the real shared data and on small hand-made trees."""
from __future__ import annotations

import itertools
import json
import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcat_kit import Taxonomy
from semcat_kit.datasets import load_google_taxonomy
from semcat_kit.datasets.taxonomy import TaxonomyMergeWarning, split_path


@pytest.fixture(scope="module")
def myntra_labels(myntra_styles):
    s = myntra_styles
    return (s["masterCategory"] + " > " + s["subCategory"] + " > " + s["articleType"]).tolist()


@pytest.fixture(scope="module")
def google(google_taxonomy_file):
    return Taxonomy.from_google_taxonomy(google_taxonomy_file)


def _naive_distance(tax: Taxonomy, i: int, j: int) -> int:
    """Reference: walk the two paths segment by segment."""
    a = tax.classes[i].split(tax.sep)
    b = tax.classes[j].split(tax.sep)
    common = 0
    for x, y in zip(a, b):
        if x != y:
            break
        common += 1
    return max(len(a), len(b)) - common


# ------------------------------------------------------------------------------ Myntra (real)
def test_myntra_majority_policy(myntra_labels):
    with pytest.warns(TaxonomyMergeWarning, match="27 category path"):
        tax = Taxonomy.from_paths(myntra_labels, on_conflict="majority")
    assert tax.n_classes == 143 == len(set(tax.names))
    assert tax.max_depth == 3
    assert all(tax.depth(i) == 3 for i in range(tax.n_classes))
    c = tax.conflicts
    assert list(c.columns) == ["name", "path", "count", "resolved_to", "kept"]
    assert c["name"].nunique() == 25
    belts = c[c["name"] == "Belts"].set_index("path")
    assert belts.loc["Accessories > Belts > Belts", "count"] == 810
    assert bool(belts.loc["Accessories > Belts > Belts", "kept"])
    assert belts.loc["Apparel > Topwear > Belts", "count"] == 3
    assert belts.loc["Apparel > Topwear > Belts", "resolved_to"] == "Accessories > Belts > Belts"
    assert not bool(belts.loc["Apparel > Topwear > Belts", "kept"])
    # counts in the report are the real label counts; each name's winner is its most frequent path
    counts = pd.Series(myntra_labels).value_counts()
    assert (c["count"].to_numpy() == counts.loc[c["path"]].to_numpy()).all()
    for name, grp in c.groupby("name"):
        assert grp.loc[grp["kept"], "count"].iloc[0] == grp["count"].max()
        assert grp.loc[grp["kept"], "path"].iloc[0] in tax.classes
    # every minority path is an alias of its majority class
    assert len(tax.aliases) == 170 - 143 == (~c["kept"].astype(bool)).sum()


def test_myntra_auto_policy_merges_only_noise_and_says_so(myntra_labels):
    """Default: a minority path stays its own class unless it has <= 5 items, < 15% of its name and
    < 50% of its parent's items."""
    with pytest.warns(TaxonomyMergeWarning) as rec:
        tax = Taxonomy.from_paths(myntra_labels)
    msg = str(rec[0].message)
    assert msg.startswith("16 category path(s)")
    # the warning names each merged path with its count and the class it went to, with that count
    assert "'Apparel > Topwear > Belts' (3 items) merged into 'Accessories > Belts > Belts' (810 items)" in msg
    assert "'Accessories > Belts > Tshirts' (1 item) merged into 'Apparel > Topwear > Tshirts' (7069 items)" in msg
    assert tax.n_classes == 154 and len(tax.aliases) == 16
    # consistent alternatives stay distinct classes ...
    for p in ("Personal Care > Eyes > Eyeshadow", "Personal Care > Makeup > Eyeshadow",
              "Accessories > Accessories > Messenger Bag", "Apparel > Apparel Set > Swimwear",
              "Personal Care > Perfumes > Perfume and Body Mist"):   # its parent holds only it
        assert p in tax.classes
    # ... and every merged path satisfies the documented rule, every kept minority breaks it
    c = tax.conflicts
    total = c.groupby("name")["count"].transform("sum")
    winner = c.groupby("name")["count"].transform("max") == c["count"]
    parent_items = pd.Series(myntra_labels).str.rsplit(" > ", n=1).str[0].value_counts()
    in_parent = parent_items.loc[c["path"].str.rsplit(" > ", n=1).str[0]].to_numpy()
    noise = (c["count"] <= 5) & (c["count"] < 0.15 * total) & ~winner & (c["count"] < 0.5 * in_parent)
    assert (noise == ~c["kept"].astype(bool)).all()
    m = tax.merges()
    assert set(m["path"]) == set(tax.aliases) and (m["count"] <= 5).all()
    assert Taxonomy.from_paths(myntra_labels, merge_max_count=0).n_classes == 170


def test_auto_policy_small_cases():
    # distinct parents with real mass stay distinct (no warning at all)
    labels = ["Men > Footwear > Shoes"] * 40 + ["Women > Footwear > Shoes"] * 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = Taxonomy.from_paths(labels)
    assert t.n_classes == 2 and not t.aliases and len(t.conflicts) == 2
    # a stray item (misfiled under B, whose items are Ys) is merged, with a warning naming it
    with pytest.warns(TaxonomyMergeWarning, match=r"'B > X' \(1 item\) merged into 'A > X' \(40 items\)"):
        t = Taxonomy.from_paths(["A > X"] * 40 + ["B > Y"] * 10 + ["B > X"])
    assert t.classes == ["A > X", "B > Y"] and t.index_of("B > X") == 0
    # a small share but more than merge_max_count items: kept
    t = Taxonomy.from_paths(["A > X"] * 400 + ["B > X"] * 6)
    assert t.n_classes == 2
    # equal-sized paths are never noise of one another
    t = Taxonomy.from_paths([f"{p} > X" for p in "ABCDEFGHIJ"])
    assert t.n_classes == 10 and not t.aliases
    # a parent that exists for the minority path makes it a category (Amazon: Action Man > Toys)
    t = Taxonomy.from_paths(["Brands > Disney > Toys"] * 300 + ["Brands > Action Man > Toys"] * 4)
    assert t.n_classes == 2
    t = Taxonomy.from_paths(["Brands > Disney > Toys"] * 300 + ["Brands > Action Man > Toys"] * 4
                            + ["Brands > Action Man > Figures"] * 20)
    assert t.n_classes == 2 and t.aliases == {"Brands > Action Man > Toys": "Brands > Disney > Toys"}
    with pytest.raises(ValueError, match="on_conflict must be one of"):
        Taxonomy.from_paths(labels, on_conflict="vote")


def test_mixed_separators_are_refused():
    ok = ["Apparel > Topwear > Shirts"] * 3 + ["Apparel > Topwear > Tshirts"]
    with pytest.raises(ValueError, match=r"mix separators.*'Apparel / Topwear / Shirts' \(2 items, first at row 4\)"
                                         r" looks like 'Apparel > Topwear > Shirts'"):
        Taxonomy.from_paths(ok + ["Apparel / Topwear / Shirts"] * 2)
    with pytest.raises(ValueError, match="mix separators.*'Apparel > Topwear / Jeans'"):
        Taxonomy.from_paths(ok + ["Apparel > Topwear / Jeans"])
    # the other way round: ' / ' given, one row written with ' > '
    with pytest.raises(ValueError, match="mix separators"):
        Taxonomy.from_paths(["A / B / C", "A / B / D", "A > B > E"], sep=" / ")
    # a whole column with another separator: the wrong sep was given
    with pytest.raises(ValueError, match="pass sep=' / '"):
        Taxonomy.from_paths(["A / B", "A / C", "D / E"])
    # a '/' inside a leaf name is not a separator
    t = Taxonomy.from_paths(["Apparel > Topwear > Kurtas/Kurtis", "Apparel > Topwear > Kurtas", "Home > Mugs / Cups"])
    assert t.n_classes == 3


def test_letter_case_variants_merge_into_the_most_frequent_spelling_with_a_warning_each():
    from semcat_kit.datasets.taxonomy import LabelCaseWarning, TaxonomyMergeWarning

    labels = ["Watches > Fastrack > Men", "Watches > Fastrack > Men", "Watches > fastrack > Men",
              "Watches > Fastrack > Women", "Bags > USB Bags", "Bags > USB bags", "Bags > USB Bags"]
    with pytest.warns(LabelCaseWarning) as rec:
        tax = Taxonomy.from_paths(labels)
    msgs = [str(w.message) for w in rec if issubclass(w.category, LabelCaseWarning)]
    # one warning per merged spelling (the brand once, not once per label below it), with counts and a row
    assert msgs == ["letter case: 'Bags > USB bags' (1 item, first at row 5) merged into 'Bags > USB Bags' (2 items), "
                    "the same category spelled as most of its items are (label_case='strict' refuses instead)",
                    "letter case: 'Watches > fastrack' (1 item, first at row 2) merged into 'Watches > Fastrack' "
                    "(3 items), the same category spelled as most of its items are (label_case='strict' refuses "
                    "instead)"]
    assert issubclass(LabelCaseWarning, TaxonomyMergeWarning)     # silenced and reported like the parent merges
    assert tax.classes == ["Bags > USB Bags", "Watches > Fastrack > Men", "Watches > Fastrack > Women"]
    # "USB" keeps its capitals: nothing is title-cased, the spelling most items use wins
    assert tax.index_of(labels).tolist() == [1, 1, 1, 2, 0, 0, 0]
    m = tax.merges()
    assert m["reason"].tolist() == ["letter case"] * 2 and m["count"].tolist() == [1, 1]
    assert m["resolved_count"].tolist() == [2, 3]
    assert "2 category spelling(s) differ only in letter case" in tax.merge_message()


def test_letter_case_strict_lists_each_conflict_once_with_lines_and_a_fix():
    labels = ["Apparel > Topwear", "Apparel > Topwear", "apparel > topwear", "A > Shoes", "A > shoes", "A > Bags"]
    lines = [f"line {i + 2}" for i in range(len(labels))]
    with pytest.raises(ValueError) as e:
        Taxonomy.from_paths(labels, label_case="strict", rows=lines)
    msg = str(e.value)
    assert msg.startswith("the labels spell 3 categories in different letter case: ")
    assert ("'A > Shoes' (1 item, first at line 5) vs 'A > shoes' (1 item, first at line 6)" in msg)
    assert "'Apparel' (2 items, first at line 2) vs 'apparel' (1 item, first at line 4)" in msg
    listed = msg[:msg.index("Fix:")]
    assert listed.count("'apparel'") == 1 and listed.count("'A > shoes'") == 1    # each spelling named once
    assert "'Apparel > Topwear' (2 items, first at line 2) vs 'Apparel > topwear' (1 item, first at line 4)" in msg
    assert "Fix: write each category one way in the file" in msg and "'label_case': 'merge'" in msg
    assert ".str.title()" not in msg
    with pytest.raises(ValueError, match="label_case must be one of"):
        Taxonomy.from_paths(labels, label_case="lower")


def test_load_malformed_file_names_it(tmp_path):
    cases = {"trunc.json": '{"sep": " > ", "classes": ["A > B", ', "list.json": "[1, 2]",
             "noclasses.json": '{"sep": " > "}', "types.json": '{"classes": [1, 2]}',
             "bin.json": b"\xff\xfe\x00garbage", "alias.json": '{"classes": ["A"], "aliases": {"B": "Z"}}'}
    for name, text in cases.items():
        p = tmp_path / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ValueError, match=f"{name}' is not a taxonomy file written by Taxonomy.save") as e:
            Taxonomy.load(p)
        assert not isinstance(e.value, (TypeError, KeyError))
    with pytest.raises(FileNotFoundError, match="no taxonomy file"):
        Taxonomy.load(tmp_path / "nope.json")


def test_myntra_index_of_maps_minority_paths(myntra_labels):
    tax = Taxonomy.from_paths(myntra_labels, on_conflict="majority")
    y = tax.index_of(myntra_labels)
    assert y.shape == (len(myntra_labels),) and y.min() >= 0
    assert tax.index_of("Apparel > Topwear > Belts") == tax.index_of("Accessories > Belts > Belts")
    assert tax.classes[tax.index_of("Apparel > Topwear > Belts")] == "Accessories > Belts > Belts"
    assert tax.resolve(["Apparel > Topwear > Belts", "nope"]) == ["Accessories > Belts > Belts", "nope"]
    # the name of every item's class equals its articleType
    names = np.array(tax.names)[y]
    assert (names == np.array([lab.split(" > ")[-1] for lab in myntra_labels])).all()


def test_myntra_keep_and_error(myntra_labels):
    keep = Taxonomy.from_paths(myntra_labels, on_conflict="keep")
    assert keep.n_classes == 170 and not keep.aliases
    assert keep.conflicts["kept"].astype(bool).all() and len(keep.conflicts) == 52
    assert sorted(keep.classes) == sorted(set(myntra_labels))
    with pytest.raises(ValueError, match=r"category '.+' sits under several parents: .*\(\d+ items\)") as e:
        Taxonomy.from_paths(myntra_labels, on_conflict="error")
    name = str(e.value).split("'")[1]
    assert name in set(keep.conflicts["name"])
    with pytest.raises(ValueError, match="on_conflict must be"):
        Taxonomy.from_paths(myntra_labels, on_conflict="vote")


def test_myntra_distances(myntra_labels):
    tax = Taxonomy.from_paths(myntra_labels)
    i = tax.index_of("Apparel > Topwear > Shirts")
    assert tax.lca_distance(i, tax.index_of("Apparel > Topwear > Tshirts")) == 1
    assert tax.lca_distance(i, tax.index_of("Apparel > Bottomwear > Jeans")) == 2
    assert tax.lca_distance(i, tax.index_of("Footwear > Shoes > Casual Shoes")) == 3
    D = tax.distance_matrix()
    assert D.shape == (154, 154) and D.dtype == np.int8
    assert set(np.unique(D)) == {0, 1, 2, 3}
    assert (np.diag(D) == 0).all() and (D == D.T).all()


# ------------------------------------------------------------------------------ Google (real)
def test_google_taxonomy_shape(google, google_taxonomy_file):
    g = google
    assert g.n_classes == 5595 and len(g.node_paths) == 5596  # every node is a class, plus the root
    depths = g.depth(np.arange(g.n_classes))
    assert depths.min() == 1 and depths.max() == 7 == g.max_depth
    assert len(g.children("")) == 21
    df = load_google_taxonomy(google_taxonomy_file)
    assert g.classes == df["path"].tolist()  # class i is line i of the file
    assert (depths == df["depth"].to_numpy()).all()
    # leaves: nodes without children
    n_leaves = sum(1 for i in range(g.n_classes) if not g.children(i))
    assert n_leaves == 4719


def test_google_lca_distances_match_networkx(google):
    g = google
    rng = np.random.default_rng(0)
    i = rng.integers(0, g.n_classes, 400)
    j = rng.integers(0, g.n_classes, 400)
    d = g.lca_distance(i, j)
    G = g.to_networkx()
    pairs = [(g.classes[a], g.classes[b]) for a, b in zip(i, j)]
    lca = dict(nx.tree_all_pairs_lowest_common_ancestor(G, root="", pairs=pairs))
    depth = nx.get_node_attributes(G, "depth")
    ref = [max(depth[a], depth[b]) - depth[lca[(a, b)]] for a, b in pairs]
    assert d.tolist() == ref
    assert d.tolist() == [_naive_distance(g, a, b) for a, b in zip(i, j)]
    # broadcast over more pairs than one internal chunk (2-D result, same values)
    ii, jj = i[:300, None], j[None, :300]
    big = g.lca_distance(ii, jj)
    assert big.shape == (300, 300)
    flat = g.lca_distance(np.repeat(i[:300], 300), np.tile(j[:300], 300))  # 1-D, chunked the same way
    assert (big.ravel() == flat).all()
    assert (big[:, 0] == [_naive_distance(g, int(a), int(j[0])) for a in i[:300]]).all()
    assert big[7, 11] == _naive_distance(g, int(i[7]), int(j[11]))
    assert (g.lca_distance(i[:5], -1) == [_naive_distance(g, int(a), g.n_classes - 1) for a in i[:5]]).all()
    # sane: between 0 and the max depth, and parent-child pairs are at distance 1
    assert d.min() >= 0 and d.max() <= 7
    child = g.index_of("Animals & Pet Supplies > Live Animals")
    parent = g.index_of("Animals & Pet Supplies")
    assert g.lca_distance(child, parent) == 1 == g.lca_distance(parent, child)
    assert g.lca_depth(child, parent) == 1
    # different top-level branches: distance is the deeper depth
    a = g.index_of("Apparel & Accessories")
    assert g.lca_distance(a, child) == 2 and g.lca_depth(a, child) == 0


# ------------------------------------------------------------------------------ small edge cases
def test_single_class_and_depth_one_tree():
    t = Taxonomy.from_paths(["Only", "Only"])
    assert t.classes == ["Only"] and t.names == ["Only"] and t.n_classes == 1 == len(t)
    assert t.lca_distance(0, 0) == 0 and t.depth(0) == 1 and t.parent(0) is None
    assert t.distance_matrix().tolist() == [[0]]
    flat = Taxonomy.from_paths(["B", "A", "C"])
    assert flat.classes == ["A", "B", "C"]
    D = flat.distance_matrix()
    assert D.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    assert flat.ancestors(0) == [] and flat.ancestors(0, include_self=True) == ["A"]
    assert flat.children("") == ["A", "B", "C"] and flat.children(1) == []


def test_unicode_names_and_whitespace():
    t = Taxonomy.from_paths(["Küche > Tassen ☕", "Küche >  Teller", "Café > Crème brûlée"])
    assert t.classes == ["Café > Crème brûlée", "Küche > Tassen ☕", "Küche > Teller"]
    assert t.names == ["Crème brûlée", "Tassen ☕", "Teller"]
    assert t.index_of("Küche > Tassen ☕") == 1
    assert t.lca_distance(1, 2) == 1 and t.lca_distance(0, 1) == 2
    # the very labels the taxonomy was built from are accepted back, whatever their spacing
    raw = ["Küche >  Teller", "Küche>Tassen ☕", " Café > Crème brûlée "]
    assert t.index_of(raw).tolist() == [2, 1, 0]
    assert t.resolve(raw + ["Küche > Nope"]) == ["Küche > Teller", "Küche > Tassen ☕", "Café > Crème brûlée",
                                                 "Küche > Nope"]
    c = Taxonomy.from_paths(["A > X", "A > X", "B>X"], on_conflict="majority")
    assert c.index_of(["B > X", "B>X", " B >X"]).tolist() == [0, 0, 0] and c.resolve(["B>X"]) == ["A > X"]
    with pytest.raises(KeyError, match="'Küche >  Tellerx'"):
        t.index_of(["Küche >  Tellerx"])


def test_conflict_small_and_tie_break():
    labels = ["A > X"] * 3 + ["B > X"] * 3 + ["C > X"] + ["A > Y"]
    t = Taxonomy.from_paths(labels, on_conflict="majority")
    # a tie in counts is broken by the path (alphabetical), deterministically
    assert "A > X" in t.classes and "B > X" not in t.classes
    assert t.aliases == {"B > X": "A > X", "C > X": "A > X"}
    assert t.conflicts["path"].tolist() == ["A > X", "B > X", "C > X"]
    assert t.conflicts["count"].tolist() == [3, 3, 1]
    assert (t.index_of(["B > X", "C > X"]) == t.index_of("A > X")).all()
    clean = Taxonomy.from_paths(["A > X", "A > Y"])
    assert clean.conflicts.empty and list(clean.conflicts.columns) == ["name", "path", "count", "resolved_to", "kept"]


def test_index_of_errors_name_unknown_labels():
    t = Taxonomy.from_paths(["A > X", "A > Y"])
    with pytest.raises(KeyError, match=r"row 1: 'A > Z'"):
        t.index_of(["A > X", "A > Z"])
    with pytest.raises(KeyError, match=r"7 label\(s\).*and 2 more"):
        t.index_of([f"Q{k}" for k in range(7)])
    with pytest.raises(KeyError, match="'nope'"):
        t.index_of("nope")
    assert isinstance(t.index_of("A > Y"), int)
    assert t.index_of([]).shape == (0,)


def test_bad_paths_raise_naming_row():
    with pytest.raises(ValueError, match=r"row 1\).*empty segment"):
        Taxonomy.from_paths(["A > B", "A >  > C"])
    with pytest.raises(ValueError, match=r"row 2\).*not a string"):
        Taxonomy.from_paths(["A", "B", None])
    with pytest.raises(ValueError, match="no labels"):
        Taxonomy.from_paths([])
    with pytest.raises(ValueError, match="empty segment"):
        split_path("  ")
    assert split_path(" A >B > C ") == ("A", "B", "C")


def _mixed():
    # classes at several depths, an ancestor/descendant pair among them
    return Taxonomy.from_paths(["A", "A > B", "A > B > C", "A > B > D", "A > E", "F > G > H > I"], on_conflict="keep")


def test_ancestor_descendant_and_mixed_depth_distance():
    t = _mixed()
    a, ab, abc, abd, ae, fghi = range(6)
    assert t.lca_distance(a, abc) == 2 and t.lca_distance(abc, a) == 2
    assert t.lca_distance(ab, abc) == 1
    assert t.lca_distance(abc, abd) == 1 and t.lca_distance(abc, ae) == 2
    assert t.lca_distance(abc, fghi) == 4 and t.lca_distance(a, fghi) == 4
    assert t.lca_depth(abc, abd) == 2 and t.lca_depth(a, fghi) == 0
    # vectorised broadcast
    got = t.lca_distance(np.array([[abc], [a]]), np.array([abd, ae, fghi]))
    assert got.tolist() == [[1, 2, 4], [2, 1, 4]]
    assert t.depth([a, abc, fghi]).tolist() == [1, 3, 4]


def test_distance_matrix_equals_pairwise():
    for t in (_mixed(), Taxonomy.from_paths(["A > B > C", "A > B > D", "A > E > F", "G > H > I"])):
        D = t.distance_matrix()
        C = t.n_classes
        assert all(D[i, j] == t.lca_distance(i, j) == _naive_distance(t, i, j)
                   for i, j in itertools.product(range(C), range(C)))
    with pytest.raises(MemoryError, match="too large"):
        _mixed().distance_matrix(max_classes=3)


def test_parent_ancestors_level_and_level_index():
    t = _mixed()
    assert t.parent(2) == "A > B" and t.parent(0) is None
    assert t.ancestors(5) == ["F", "F > G", "F > G > H"]
    assert t.ancestors(5, include_self=True)[-1] == "F > G > H > I"
    assert t.level(2, 1) == "A" and t.level(2, 2) == "B" and t.level(2, 3) == "C"
    assert t.level(0, 3) == "A"  # shallower classes give their own name
    assert t.level(np.arange(6), 2).tolist() == ["A", "B", "B", "B", "E", "G"]
    li = t.level_index(np.arange(6), 1)
    assert li[0] == li[1] == li[2] == li[3] == li[4] != li[5]
    assert [t.node_paths[n] for n in t.level_index([2, 5], 2)] == [("A", "B"), ("F", "G")]
    with pytest.raises(ValueError, match="level counts from 1"):
        t.level(0, 0)
    A = t.ancestor_matrix()
    assert A.shape == (6, 5) and (A[:, 0] == 0).all() and A[0, 2] == -1
    A[0, 0] = 99  # a copy
    assert t.ancestor_matrix()[0, 0] == 0


def test_children():
    t = _mixed()
    assert t.children("A") == ["A > B", "A > E"]
    assert t.children(1) == ["A > B > C", "A > B > D"]
    assert t.children("F > G") == ["F > G > H"]  # intermediate, non-class nodes too
    assert t.children(2) == []
    with pytest.raises(KeyError, match="'Z > Q' is not a node"):
        t.children("Z > Q")


def test_to_networkx():
    t = _mixed()
    g = t.to_networkx()
    assert nx.is_arborescence(g)
    assert g.number_of_nodes() == len(t.node_paths) == 10  # root + 9 nodes
    assert g.nodes[""]["depth"] == 0 and not g.nodes[""]["is_class"]
    assert g.nodes["A > B"]["class_index"] == 1 and g.nodes["A > B"]["name"] == "B"
    assert g.nodes["F > G"]["is_class"] is False and g.nodes["F > G"]["class_index"] == -1
    assert set(g.successors("A")) == {"A > B", "A > E"}


def test_to_dict_round_trip_and_save_load(tmp_path, myntra_labels):
    for t in (Taxonomy.from_paths(myntra_labels[:5000]), _mixed()):
        d = t.to_dict()
        json.dumps(d)
        t2 = Taxonomy.from_dict(d)
        assert t2.classes == t.classes and t2.aliases == t.aliases and t2.sep == t.sep
        p = tmp_path / "sub" / "tax.json"
        t.save(p)
        t3 = Taxonomy.load(p)
        assert t3.classes == t.classes and t3.aliases == t.aliases
        i = np.arange(t.n_classes)
        assert (t3.lca_distance(i[:, None], i[None, :]) == t.lca_distance(i[:, None], i[None, :])).all()
        assert not list(p.parent.glob(".*tmp"))  # atomic write left no temp file
    t = Taxonomy.from_paths(["A / B", "A / C"], sep=" / ")
    assert Taxonomy.from_dict(t.to_dict()).classes == ["A / B", "A / C"]



def test_save_load_expand_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    _mixed().save("~/tax.json")
    assert (tmp_path / "home" / "tax.json").is_file() and not list((tmp_path / "cwd").iterdir())
    assert Taxonomy.load("~/tax.json").classes == _mixed().classes


def test_repr():
    assert repr(_mixed()) == "Taxonomy(6 classes, 9 nodes, depth 4, 0 aliases)"


# ------------------------------------------------------------------------------ properties
_names = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def equal_depth_trees(draw):
    depth = draw(st.integers(1, 4))
    paths = draw(st.lists(st.tuples(*[_names] * depth), min_size=1, max_size=25, unique=True))
    return Taxonomy.from_paths([" > ".join(p) for p in paths])


@st.composite
def any_trees(draw):
    paths = draw(st.lists(st.lists(_names, min_size=1, max_size=4).map(tuple), min_size=1, max_size=25, unique=True))
    return Taxonomy.from_paths([" > ".join(p) for p in paths], on_conflict="keep")   # "a > b" and "b" stay two classes


@settings(max_examples=60, deadline=None)
@given(any_trees())
def test_property_symmetric_zero_diagonal_bounded(t):
    C = t.n_classes
    D = t.distance_matrix()
    assert (D == D.T).all() and (np.diag(D) == 0).all()
    off = ~np.eye(C, dtype=bool)
    assert (D[off] >= 1).all()  # distinct classes are never at distance 0
    dep = t.depth(np.arange(C))
    assert (D <= np.maximum(dep[:, None], dep[None, :])).all()
    i, j = np.divmod(np.arange(C * C), C)
    assert D.ravel().tolist() == [_naive_distance(t, a, b) for a, b in zip(i, j)]


@settings(max_examples=60, deadline=None)
@given(equal_depth_trees())
def test_property_ultrametric_for_equal_depth_leaves(t):
    D = t.distance_matrix().astype(int)
    # d(i, k) <= max(d(i, j), d(j, k)) for all triples
    assert (D[:, None, :] <= np.maximum(D[:, :, None], D[None, :, :])).all()
