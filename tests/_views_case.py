"""A 5,595-class case for the views: the real Google Product Taxonomy, real Amazon toys products (their
32-character ``uniq_id`` and their titles) and generated labels and predictions.

* class embeddings are tree-shaped (a class = the sum of random vectors of its ancestors, weighted by
  1/depth), so siblings are near; their neighbours are real ``label_neighbors``;
* labels follow a long tail (Zipf over a random order of the classes), so a few classes hold many
  products and most hold one or none;
* predictions are right half the time, else the nearest neighbour of the true class (a sibling,
  mostly) or a random class.

Used by tests/test_scale_views.py (in-process) and tests/test_browser.py (inside a JupyterLab kernel,
which imports this file from the tests folder).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from semcat_kit import Taxonomy
from semcat_kit.labels.similarity import Neighbors, label_neighbors


@dataclass
class GoogleCase:
    taxonomy: Taxonomy
    class_emb: np.ndarray       # (C, 32)
    neighbors: Neighbors
    probs: np.ndarray           # (N, C) float32
    y: np.ndarray               # (N,) given class indices
    catalog: pd.DataFrame       # item_id, title, image_path (None), label

    @property
    def counts(self) -> pd.Series:
        """Products per class, indexed by class path (as ``Workspace.class_counts()``)."""
        return pd.Series(np.bincount(self.y, minlength=self.taxonomy.n_classes), index=self.taxonomy.classes)


def google_case(taxonomy_file, toys_csv=None, n_items: int = 1500, seed: int = 0, k: int = 10) -> GoogleCase:
    tax = Taxonomy.from_google_taxonomy(taxonomy_file)
    C = tax.n_classes
    rng = np.random.default_rng(seed)
    node_vec = rng.normal(size=(len(tax.node_paths), 32))
    emb = np.zeros((C, 32))
    for d in range(1, tax.max_depth + 1):
        a = tax._class_anc[:, d]   # private: the ancestor table the views are built from (the invariant)
        ok = a >= 0
        emb[ok] += node_vec[a[ok]] / d
    nbrs = label_neighbors(emb.astype(np.float32), k=k)
    order = rng.permutation(C)
    zipf = 1.0 / np.arange(1, C + 1) ** 1.1
    y = order[rng.choice(C, size=n_items, p=zipf / zipf.sum())]
    logits = rng.normal(size=(n_items, C)).astype(np.float32)
    right = rng.random(n_items) < 0.5
    near = rng.random(n_items) < 0.8
    wrong = np.where(near, nbrs.indices[y, 0], rng.integers(0, C, n_items))
    logits[np.arange(n_items), np.where(right, y, wrong)] += 12
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    ids = [f"{rng.integers(0, 2**63):016x}{rng.integers(0, 2**63):016x}" for _ in range(n_items)]
    titles = [f"generated product {i}" for i in range(n_items)]
    if toys_csv is not None and Path(toys_csv).is_file():
        toys = pd.read_csv(toys_csv, usecols=["uniq_id", "product_name"], dtype=str).dropna()
        toys = toys.drop_duplicates("uniq_id").sample(min(n_items, len(toys)), random_state=seed)
        ids[: len(toys)] = toys["uniq_id"].tolist()
        titles[: len(toys)] = toys["product_name"].tolist()
    cat = pd.DataFrame({"item_id": ids, "title": titles, "image_path": None,
                        "label": [tax.classes[i] for i in y]})
    cat["image_path"] = pd.Series([None] * n_items, dtype=object)
    return GoogleCase(tax, emb, nbrs, probs.astype(np.float32), y, cat)
