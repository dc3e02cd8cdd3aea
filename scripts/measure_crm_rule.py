"""Where CRM decoding collapses: CRM vs argmax top-1 against the probabilities' sharpness (issue 27 item 9).

For heads trained with budgets from starved to converged, on catalogs from many tiny classes to a few
large ones, this prints one row per run: the mean top-1 probability on the validation split
(``confidence``, what :func:`semcat_kit.judge.decoding.crm_trust` reads) and the test top-1 of argmax
and of CRM. The rule in ``crm_trust`` (CRM is flagged below ``CRM_MIN_CONFIDENCE``) is read off this
table; docs/crm_rule.md holds the table it was chosen on::

    python scripts/measure_crm_rule.py > docs/crm_rule.md
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import semcat_kit as sk  # noqa: E402
import _bench_data as bd  # noqa: E402

BUDGETS = [("minibatch", 1), ("minibatch", 2), ("minibatch", 3), ("minibatch", 4), ("minibatch", 6), ("minibatch", 8),
           ("minibatch", 16), ("auto", None)]


def catalogs():
    for name in ("tutorial", "toys"):
        emb, y, tax, sp = bd.load(name)
        yield name, emb, y, tax, sp
        if name == "toys":   # a small shop: ~1,000 products, most classes with one or two items
            rng = np.random.default_rng(0)
            keep = np.sort(rng.choice(len(y), 1050, replace=False))
            labels = np.array(tax.classes, dtype=object)[y[keep]]
            t2 = sk.Taxonomy.from_paths(labels, on_conflict="majority")
            y2 = np.asarray(t2.index_of(labels))
            sp2 = sk.split(labels, val=0.1, test=0.2, seed=0)      # classes under 3 items: train only
            yield "toys-1050", emb.take(keep), y2, t2, sp2


def main():
    from semcat_kit.judge.decoding import crm_predict, crm_trust

    rows = []
    for name, emb, y, tax, sp in catalogs():
        tr, va, te = bd.pairs(emb, y, sp)
        counts = np.bincount(tr[1], minlength=tax.n_classes)
        for solver, epochs in BUDGETS:
            kw = dict(solver=solver, device="cpu")
            if epochs is not None:
                kw.update(epochs=epochs, min_steps=0, early_stopping=None)
            cfg = sk.TrainConfig(**kw)      # epochs None: the budget sk.train decides for the data
            run = sk.train(tr[0], tr[1], taxonomy=tax, config=cfg, val=va, progress=False)
            pv, pt = run.predict_proba(va[0]), run.predict_proba(te[0])
            trust = crm_trust(pv)
            arg = float((pt.argmax(1) == te[1]).mean())
            crm = float((crm_predict(pt, tax, top_k=1)[0][:, 0] == te[1]).mean())
            rows.append({"catalog": name, "classes": tax.n_classes, "1-item classes": int((counts <= 1).sum()),
                         "budget": f"{solver} {epochs} epochs" if epochs else "data-aware default",
                         "confidence": trust.confidence, "top1": arg, "crm top1": crm, "crm - argmax": crm - arg,
                         "flagged": not trust.ok})
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"load average at the end: {os.getloadavg()}\n")
    print(markdown(pd.DataFrame(rows)))


def markdown(df: pd.DataFrame) -> str:
    """A Markdown table of ``df`` (floats to 3 decimals)."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
