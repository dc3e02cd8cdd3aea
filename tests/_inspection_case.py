"""Shared test inputs for test_inspect / test_viz / test_widgets: real Myntra products with
synthetic but realistic model outputs (no training needed).

* catalog: a fixed random sample of real products (+ the 3 real "Belts under Apparel > Topwear"
  rows and a real id whose image file is missing), columns item_id, title, image_path, label;
* taxonomy: Taxonomy.from_paths(on_conflict="majority") over the *whole* catalog (masterCategory > subCategory > articleType);
* probs: mostly right; mistakes concentrated in siblings (same parent), some in other branches;
* planted label noise: a few items whose given label was replaced by a class of another top-level
  branch while the model stays confident in their real class;
* neighbours: sk.similarity.label_neighbors (cosine k-NN) of fixed random class embeddings built from the tree (shared top-level
  and parent components + a class-specific part), so most but not all neighbours share the parent.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from semcat_kit import Taxonomy
from semcat_kit.labels.similarity import Neighbors, label_neighbors

MISSING_IMAGE_ID = "39403"  # one of the 5 catalog ids without an image file


@dataclass
class Case:
    catalog: pd.DataFrame      # given labels in "label"
    taxonomy: Taxonomy
    probs: np.ndarray          # (N, C)
    y: np.ndarray              # given class indices
    y_real: np.ndarray         # real class indices (before planting noise)
    planted: np.ndarray        # row positions of planted label noise
    class_emb: np.ndarray      # (C, 32)
    neighbors: Neighbors       # real sk.similarity.label_neighbors on the class embeddings


def full_labels(styles: pd.DataFrame) -> pd.Series:
    return styles["masterCategory"] + " > " + styles["subCategory"] + " > " + styles["articleType"]


def make_case(styles: pd.DataFrame, fashion_dir: Path, n: int = 300, seed: int = 0, k: int = 8) -> Case:
    rng = np.random.default_rng(seed)
    styles = styles.assign(label=full_labels(styles))
    tax = Taxonomy.from_paths(styles["label"], on_conflict="majority")  # every stray path an alias (143 classes)
    belts = styles[styles["label"] == "Apparel > Topwear > Belts"]
    missing = styles[styles["id"].astype(str) == MISSING_IMAGE_ID]
    rest = styles.drop(belts.index.union(missing.index)).sample(n - len(belts) - len(missing), random_state=seed)
    df = pd.concat([rest, belts, missing]).reset_index(drop=True)
    images = Path(fashion_dir) / "images"
    cat = pd.DataFrame({
        "item_id": df["id"].astype(str),
        "title": df["productDisplayName"].fillna("").astype(str),
        "image_path": [str(images / f"{i}.jpg") if (images / f"{i}.jpg").exists() else None for i in df["id"]],
        "label": df["label"],
    })
    y_real = np.asarray(tax.index_of(cat["label"]))
    C = tax.n_classes
    parent = np.array([tax.node_parent[v] for v in tax.class_nodes])
    top = np.asarray(tax.level_index(np.arange(C), 1))
    N = len(cat)
    logits = rng.normal(0.0, 0.5, (N, C))
    for i in range(N):
        t = y_real[i]
        u = rng.random()
        sib = np.flatnonzero((parent == parent[t]) & (np.arange(C) != t))
        if u < 0.65 or (u < 0.9 and not len(sib)):
            p = t
        elif u < 0.9:
            p = rng.choice(sib)
        else:
            p = rng.integers(C)
        logits[i, p] += rng.uniform(6.0, 9.0)
        if p != t:
            logits[i, t] += rng.uniform(3.0, 5.5)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    # plant label noise: confident, correct predictions whose given label moves to another branch
    right = np.flatnonzero((probs.argmax(1) == y_real) & (probs.max(1) > 0.9))
    planted = np.sort(rng.choice(right, 5, replace=False))
    y = y_real.copy()
    common = np.flatnonzero(np.bincount(y_real, minlength=C) >= 5)  # CL needs a few items per class
    for i in planted:
        far = common[top[common] != top[y_real[i]]]
        y[i] = rng.choice(far)
    cat.loc[planted, "label"] = [tax.classes[j] for j in y[planted]]
    # tree-shaped class embeddings -> cosine k-NN
    d = 32
    e_top = rng.normal(size=(len(tax.node_paths), d))
    e_par = rng.normal(size=(len(tax.node_paths), d))
    e_cls = rng.normal(size=(C, d))
    emb = 0.8 * e_top[top] + 1.0 * e_par[parent] + 0.9 * e_cls
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    nb = label_neighbors(emb.astype(np.float32), k=k)
    return Case(cat, tax, probs.astype(np.float32), y, y_real, planted, emb.astype(np.float32), nb)


def small_taxonomy() -> Taxonomy:
    return Taxonomy.from_paths(["A > a > x", "A > a > y", "A > b > z", "B > c > w", "B > c > v"])
