"""split(): stratified, rare classes train-only and reported, deterministic, partition of all items."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcat_kit.datasets.splits import split


def _check_partition(s, n):
    allidx = np.concatenate([s.train, s.val, s.test])
    assert len(allidx) == n and len(np.unique(allidx)) == n  # disjoint and complete


def test_real_myntra_split(myntra_styles):
    labels = myntra_styles["articleType"].astype(str).to_numpy()
    s = split(labels, val=0.1, test=0.2, seed=0)
    _check_partition(s, len(labels))
    counts = pd.Series(labels).value_counts()
    rare = set(counts[counts < 3].index)
    assert rare, "the Myntra catalog has articleTypes with fewer than 3 items"
    assert set(s.rare_classes) == rare
    rep = s.report.set_index("label")
    assert (rep.loc[list(rare), "n_train"] == rep.loc[list(rare), "n"]).all()
    # every usable class is in all three splits, and only rare classes are missing from val/test
    usable = set(counts[counts >= 3].index)
    assert set(labels[s.val]) == usable and set(labels[s.test]) == usable
    assert set(labels[s.train]) == set(labels)
    # stratified: per-class test fraction close to 0.2 for big classes
    big = counts[counts >= 100].index
    frac = pd.Series(labels[s.test]).value_counts()[big] / counts[big]
    assert np.allclose(frac, 0.2, atol=0.01)
    assert abs(len(s.test) / len(labels) - 0.2) < 0.01 and abs(len(s.val) / len(labels) - 0.1) < 0.01
    assert (rep["n_train"] + rep["n_val"] + rep["n_test"] == rep["n"]).all()


def test_deterministic_and_seed_dependent():
    labels = np.repeat(np.arange(5), 20)
    a, b, c = split(labels, seed=3), split(labels, seed=3), split(labels, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in ("train", "val", "test"))
    assert not np.array_equal(a.test, c.test)


def test_small_classes_and_dict_access():
    labels = ["a"] * 3 + ["b"] * 2 + ["c"] * 10
    s = split(labels, val=0.1, test=0.2)
    lab = np.array(labels)
    assert sorted(lab[s.val]) == ["a", "c"] and sorted(lab[s.test]) == ["a", "c", "c"]
    assert list(lab[s["train"]]).count("b") == 2
    assert s.rare_classes == ["b"]
    assert isinstance(s["report"], pd.DataFrame)
    with pytest.raises(KeyError, match="'train', 'val', 'test'"):
        s["dev"]


def test_no_validation_split():
    s = split(np.repeat([0, 1], 10), val=0.0, test=0.3)
    assert len(s.val) == 0 and len(s.test) == 6


@pytest.mark.parametrize("kwargs, match", [
    (dict(val=0.5, test=0.5), "leaves nothing to train"),
    (dict(val=-0.1), "val must be a fraction"),
    (dict(test=1.2), "test must be a fraction"),
    (dict(min_count=1), "min_count"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split(np.repeat([0, 1], 10), **kwargs)


def test_missing_labels_named():
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        split(["a", None, "a"])


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=12),
       val=st.sampled_from([0.0, 0.05, 0.1, 0.3]), test=st.sampled_from([0.0, 0.1, 0.2, 0.45]),
       seed=st.integers(0, 10))
def test_property_every_usable_class_everywhere(counts, val, test, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    s = split(labels, val=val, test=test, seed=seed)
    _check_partition(s, len(labels))
    for c, n in enumerate(counts):
        n_tr = int((labels[s.train] == c).sum())
        assert n_tr >= 1
        if n >= 3:
            assert ((labels[s.val] == c).sum() >= 1) == (val > 0)
            assert ((labels[s.test] == c).sum() >= 1) == (test > 0)
        else:
            assert n_tr == n
