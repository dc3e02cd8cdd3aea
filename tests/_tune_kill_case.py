"""Run by test_tuning.py in a subprocess: a resumable sk.tune on real tutorial titles (hash-text
embeddings, no model) with storage=sqlite:///<db>, many trials, so the parent can SIGKILL it mid-study.

    python tests/_tune_kill_case.py DB N_TRIALS OUT_JSON
"""
from __future__ import annotations

import json
import sys

import numpy as np

import semcat_kit as sk


def data():
    cat = sk.datasets.load_fashion_tutorial()
    top = cat["label"].value_counts().index[:8]
    cat = cat[cat["label"].isin(top)].groupby("label").head(40).reset_index(drop=True)
    tax = sk.Taxonomy.from_paths(cat["label"])
    emb = sk.encode_catalog(cat[["item_id", "title"]], text_encoder=sk.encoders.load("hash-text:32"), progress=False)
    y = tax.index_of(cat["label"])
    sp = sk.split(y, val=0.25, test=0.0, seed=0)
    return (emb.take(sp.train), y[sp.train]), (emb.take(sp.val), y[sp.val]), tax


SPACE = {"label_repr": "onehot", "smoothing": ["onehot", "uniform", "tree"], "steps": (20, 60),
         "proj_dim": [64], "hidden": [64], "k": 3}
BASE = dict(device="cpu", batch_size=32, lr=3e-3)


def run(db: str, n_trials: int, **kw):
    train, val, tax = data()
    return sk.tune(train, val, taxonomy=tax, objective="top1", n_trials=n_trials, storage=f"sqlite:///{db}",
                   base_config=sk.TrainConfig(**BASE), search_space=SPACE, progress=False, **kw)


if __name__ == "__main__":
    db, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    res = run(db, n)
    with open(out, "w") as f:
        json.dump({"n": len(res.trials), "best": float(np.asarray(res.scores["top1"]))}, f)
