"""Stratified train / validation / test split that keeps rare classes usable.

Every class with at least ``min_count`` items (default 3) gets at least one item in each
non-empty split and at least one in train; its remaining items are allocated in proportion:
``n_test = max(1, round(n * test))``, ``n_val = max(1, round(n * val))``,
``n_train = n - n_val - n_test``. Classes with fewer items go to train only (a class seen only in
validation or test cannot be learnt) and are listed in the ``report`` (``train_only=True``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["split", "Split"]


@dataclass
class Split:
    """Index arrays of a split plus a per-class ``report`` DataFrame
    (``label, n, n_train, n_val, n_test, train_only``). Also readable as a dict."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    report: pd.DataFrame

    def __getitem__(self, key: str):
        if key not in ("train", "val", "test", "report"):
            raise KeyError(f"{key!r}: a Split has 'train', 'val', 'test' and 'report'")
        return getattr(self, key)

    def keys(self):
        return ["train", "val", "test", "report"]

    @property
    def rare_classes(self) -> list:
        """Labels that were put in train only (fewer than ``min_count`` items)."""
        return list(self.report.loc[self.report["train_only"], "label"])

    def __repr__(self) -> str:
        return (f"Split(train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
                f"{len(self.report)} classes, {int(self.report['train_only'].sum())} train-only)")


def split(labels, val: float = 0.1, test: float = 0.2, seed: int = 0, min_count: int = 3) -> Split:
    """Stratified split of item positions into train / val / test.

    Parameters
    ----------
    labels : array-like
        One label per item (class indices or label strings); missing labels are an error.
    val, test : float
        Target fractions of each class for validation and test (``val + test < 1``; 0 disables).
    seed : int
        Seed of the shuffle; the same labels and seed give the same split.
    min_count : int
        Classes with fewer items than this go to train only (reported).

    Returns
    -------
    Split
        ``train``, ``val``, ``test`` sorted int64 position arrays and ``report``.
    """
    for name, f in (("val", val), ("test", test)):
        if not (0.0 <= float(f) < 1.0):
            raise ValueError(f"{name} must be a fraction in [0, 1), not {f!r}")
    if val + test >= 1.0:
        raise ValueError(f"val + test = {val + test} leaves nothing to train on; keep it below 1")
    n_splits = 1 + (val > 0) + (test > 0)
    if not isinstance(min_count, (int, np.integer)) or min_count < n_splits:
        raise ValueError(f"min_count must be an int >= {n_splits} (one item per non-empty split), not {min_count!r}")
    lab = pd.Series(np.asarray(labels, dtype=object) if not isinstance(labels, pd.Series) else labels.to_numpy())
    if lab.isna().any():
        rows = np.flatnonzero(lab.isna().to_numpy())[:5].tolist()
        raise ValueError(f"labels are missing at rows {rows}; drop or label those items before splitting")
    if len(lab) == 0:
        raise ValueError("no labels given: nothing to split")
    codes, uniques = pd.factorize(lab, sort=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(codes))
    # group the shuffled positions by class (stable sort keeps the shuffle inside a class)
    by_class = order[np.argsort(codes[order], kind="stable")]
    counts = np.bincount(codes, minlength=len(uniques))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    usable = counts >= min_count
    n_test = np.where(usable & (test > 0), np.maximum(1, np.rint(counts * test)), 0).astype(np.int64)
    n_val = np.where(usable & (val > 0), np.maximum(1, np.rint(counts * val)), 0).astype(np.int64)
    # keep at least one training item: shrink the larger of val/test while needed
    over = n_test + n_val - (counts - 1)
    while (usable & (over > 0)).any():
        fix = usable & (over > 0)
        take_test = fix & (n_test >= n_val) & (n_test > 1)
        take_val = fix & ~take_test & (n_val > 1)
        n_test -= take_test
        n_val -= take_val
        over = n_test + n_val - (counts - 1)
    n_train = counts - n_val - n_test
    pos_in_class = np.arange(len(codes)) - np.repeat(starts, counts)
    cls_sorted = np.repeat(np.arange(len(uniques)), counts)
    is_test = pos_in_class < n_test[cls_sorted]
    is_val = ~is_test & (pos_in_class < (n_test + n_val)[cls_sorted])
    is_train = ~is_test & ~is_val
    report = pd.DataFrame({"label": list(uniques), "n": counts, "n_train": n_train, "n_val": n_val,
                           "n_test": n_test, "train_only": ~usable})
    return Split(train=np.sort(by_class[is_train]).astype(np.int64), val=np.sort(by_class[is_val]).astype(np.int64),
                 test=np.sort(by_class[is_test]).astype(np.int64), report=report)
