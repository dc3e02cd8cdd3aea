"""Why do trained heads lose to LogisticRegression on small catalogs? Measure it.

On each catalog (scripts/_bench_data.py: one stratified split, seed 0) and 3 training seeds, train
one-hot heads that differ in one factor at a time from the current defaults, next to a
LogisticRegression (C chosen on the validation split, refit on train) on the same embeddings:

* budget: 30 epochs (the default) vs at least STEPS=600 optimizer steps (``epochs = ceil(600 / steps_per_epoch)``);
* validation protocol: early stopping on ``val_top1`` with patience 5 (default) or none;
* capacity: the default head (proj 256, hidden 512), smaller/larger, and a linear head
  (``hidden=0``: LayerNorm + projection per modality, then one linear layer to the classes);
* loss: focal gamma 2 (default) vs cross-entropy (gamma 0);
* regularisation and step size: no dropout / modality dropout; learning rate 3e-3.

``--set optimisation`` (the second round): what closes the rest of the gap to LogisticRegression —
the input ``LayerNorm`` (``input_norm``), cross-entropy, the learning rate, weight decay and a
longer budget (``min_steps``), next to the previous data-aware defaults (the committed
``docs/training_optimisation_*.md`` also have a row "TrainConfig.for_data (now)": for_data at the time
of that run, identical to the previous defaults).
``--set defaults``: ``TrainConfig.for_data`` as it is now (the defaults Workspace and
`semcat train` apply) vs the previous data-aware defaults.
``--set mlp``: the MLP fusion head (proj 256, hidden 512) fitted full-batch with L-BFGS
(``solver="lbfgs"``, C chosen on the validation split) and in minibatches (what ``solver="auto"``
picks for it), beside the default linear head (``docs/training_mlp_*.md``). An L-BFGS run's
``steps to best`` are its L-BFGS steps at the C it kept, each over the whole training set.

Writes a Markdown table (mean ± std over seeds; steps actually taken; seconds per run) to
``--out`` (default ``docs/training_budget.md``; the committed records: ``docs/training_budget_*.md``,
``docs/training_optimisation_*.md``, ``docs/training_defaults_*.md``).

Usage: PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/measure_training_budget.py [--catalogs tutorial toys]
       [--seeds 0 1 2] [--out docs/training_budget.md]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
import torch

import _bench_data as bd
import semcat_kit as sk
from semcat_kit._core.io import atomic_write_text
from semcat_kit.experiments.baselines import LogisticBaseline

METRICS = ("top1", "macro_f1", "mistake_severity", "hdist@5")
STEPS = 600


def _epochs_for(steps: int, n_train: int, batch: int) -> int:
    return max(1, math.ceil(steps / math.ceil(n_train / batch)))


def variants(n_train: int, linear_hidden: int) -> dict[str, sk.TrainConfig]:
    """One factor at a time from the current defaults."""
    b = 256
    e = _epochs_for(STEPS, n_train, b)
    base = sk.TrainConfig()
    long = base.replace(epochs=e, early_stopping=None)
    lin = long.replace(hidden=linear_hidden)
    return {
        "default: 30 epochs, ES val_top1 p5": base,
        "30 epochs, no ES": base.replace(early_stopping=None),
        f"≥{STEPS} steps, no ES": long,
        f"≥{STEPS} steps, no ES, CE (γ=0)": long.replace(focal_gamma=0.0),
        f"≥{STEPS} steps, no ES, small head 64/128": long.replace(proj_dim=64, hidden=128),
        f"≥{STEPS} steps, no ES, linear head": lin,
        f"≥{STEPS} steps, no ES, no dropout (0/0)": long.replace(dropout=0.0, modality_dropout=0.0),
        f"≥{STEPS} steps, no ES, lr 3e-3": long.replace(lr=3e-3),
    }


def variants_optimisation(n_train: int, n_val: int) -> dict[str, sk.TrainConfig]:
    """Round two: optimisation and input geometry, from the previous data-aware defaults."""
    prev = sk.TrainConfig(min_steps=STEPS, early_stopping=None)
    return {
        f"previous for_data: ≥{STEPS} steps, no ES": prev,
        "CE, lr 1e-3, wd 0.1, ≥2000 steps": prev.replace(focal_gamma=0.0, weight_decay=0.1, min_steps=2000),
        "CE, no input LayerNorm, lr 1e-2, ≥2000 steps": prev.replace(focal_gamma=0.0, input_norm=False, lr=1e-2,
                                                                    min_steps=2000),
    }


def variants_defaults(n_train: int, n_val: int) -> dict[str, sk.TrainConfig]:
    """The data-aware defaults as they are now (what Workspace / `semcat train` use) vs the previous ones."""
    now = sk.TrainConfig().resolve(n_train, n_val)
    return {
        f"previous for_data: ≥{STEPS} steps, no ES": sk.TrainConfig(min_steps=STEPS, early_stopping=None),
        "TrainConfig.resolve now: " + ", ".join(f"{k}={v!r}" for k, v in now.decided.items()): now,
    }


def variants_mlp(n_train: int, n_val: int) -> dict[str, sk.TrainConfig]:
    """The MLP fusion head measured as the linear one is (issue 28): fitted full-batch to convergence
    with L-BFGS (``solver="lbfgs"``, C chosen on the validation split) and with the minibatch loop
    that ``solver="auto"`` picks for it (the data-aware budget), beside the default linear head."""
    mlp = dict(hidden=512, proj_dim=256)
    return {
        "linear head, L-BFGS (the default)": sk.TrainConfig(),
        "MLP head (proj 256, hidden 512), minibatch (auto)": sk.TrainConfig(**mlp),
        "MLP head (proj 256, hidden 512), L-BFGS": sk.TrainConfig(**mlp, solver="lbfgs"),
    }


def _linear_supported() -> bool:
    try:
        sk.TrainConfig(hidden=0)
        return True
    except ValueError:
        return False


def _patch_linear_head() -> int:
    """Until ``TrainConfig(hidden=0)`` exists: a script-local FusionHead whose MLP is one linear layer
    when ``hidden == 1`` (a width nobody trains with). Returns the ``hidden`` value meaning "linear"."""
    import torch.nn as nn

    import semcat_kit.learn.training as tr

    class _Head(tr.FusionHead):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            if self.config["hidden"] == 1:
                self.mlp = nn.Sequential(nn.Dropout(self.config["dropout"]),
                                         nn.Linear(self.mlp[0].in_features, self.out_dim))

    tr.FusionHead = _Head
    return 1


def run_catalog(name: str, seeds, only=None, which="budget", lr_C="val") -> pd.DataFrame:
    emb, y, tax, sp = bd.load(name)
    tr, va, te = bd.pairs(emb, y, sp)
    rows = []
    t0 = time.perf_counter()
    lr = LogisticBaseline(C=lr_C).fit(*tr, taxonomy=tax, val=va)
    secs = time.perf_counter() - t0
    s = sk.evaluate(lr.predict_proba(te[0]), te[1], tax)
    print(f"{name} | LogisticRegression C={lr.C_:g} {lr.selection_}: top1 {s['top1']:.3f} f1 {s['macro_f1']:.3f} "
          f"({secs:.1f}s)", flush=True)
    for seed in seeds:   # deterministic: one fit, repeated per seed
        rows.append({"catalog": name, "config": f"LogisticRegression (C={lr.C_:g}{' on val' if lr_C == 'val' else ''})",
                     "seed": seed,
                     **{m: s[m] for m in METRICS}, "steps": np.nan, "seconds": secs})
    spe = math.ceil(len(tr[1]) / 256)
    linear_hidden = 0 if _linear_supported() else _patch_linear_head()
    cfgs = (variants(len(tr[1]), linear_hidden) if which == "budget" else
            {"optimisation": variants_optimisation, "defaults": variants_defaults,
             "mlp": variants_mlp}[which](len(tr[1]), len(va[1])))
    for cname, cfg in cfgs.items():
        if only and not any(o in cname for o in only):
            continue
        for seed in seeds:
            t0 = time.perf_counter()
            # without early stopping the validation split is not needed (and not evaluated every epoch)
            # (--set mlp: always, as the library's suite does: it chooses C / stops early on it)
            run = sk.train(*tr, taxonomy=tax, config=cfg.replace(seed=seed), progress=False,
                           val=va if (cfg.early_stopping or which == "mlp") else None, allow_unseen_val_classes=True)
            secs = time.perf_counter() - t0
            s = sk.evaluate(run.predict_proba(te[0]), te[1], tax)
            lbfgs = run.solver.get("method") == "lbfgs"
            # an L-BFGS run's steps: its accepted L-BFGS steps at the C it kept (each a full-batch step)
            steps = run.solver["iterations"] if lbfgs else run.best_epoch * spe
            rows.append({"catalog": name, "config": cname, "seed": seed, **{m: s[m] for m in METRICS},
                         "steps": steps, "seconds": secs})
            print(f"{name} | {cname} | seed {seed}: top1 {s['top1']:.3f} f1 {s['macro_f1']:.3f} "
                  f"best_epoch {run.best_epoch} ({secs:.1f}s)", flush=True)
    df = pd.DataFrame(rows)
    df.attrs["sizes"] = dict(train=len(tr[1]), val=len(va[1]), test=len(te[1]), classes=tax.n_classes,
                             steps_per_epoch=spe)
    return df


def table(df: pd.DataFrame) -> str:
    g = df.groupby("config", sort=False)
    mu, sd = g[list(METRICS) + ["steps", "seconds"]].mean(), g[list(METRICS)].std(ddof=1)
    lines = ["| config | " + " | ".join(METRICS) + " | steps to best | s/run |",
             "|---|" + "---:|" * (len(METRICS) + 2)]
    for c in mu.index:
        cells = [f"{mu.loc[c, m]:.3f} ± {sd.loc[c, m]:.3f}" for m in METRICS]
        st = "–" if pd.isna(mu.loc[c, "steps"]) else f"{mu.loc[c, 'steps']:.0f}"
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {st} | {mu.loc[c, 'seconds']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogs", nargs="+", default=["tutorial", "toys"], choices=bd.CATALOGS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="+", default=None, help="run only the variants whose name contains one of these")
    ap.add_argument("--set", default="budget", choices=["budget", "optimisation", "defaults", "mlp"],
                    dest="which", help="budget: the first round of variants; optimisation: the second; final: "
                                       "TrainConfig.for_data as it is now vs the previous data-aware defaults")
    ap.add_argument("--lr-C", default="val", help="LogisticRegression C ('val': chosen on the validation split)")
    ap.add_argument("--out", default=str(bd.ROOT / "docs" / "training_budget.md"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    parts = [
        "# Training budget, validation protocol and head size on small catalogs",
        "",
        "Written by `scripts/measure_training_budget.py` "
        f"(`--catalogs {' '.join(a.catalogs)} --seeds {' '.join(map(str, a.seeds))}"
        f"{'' if not a.only else ' --only ' + ' '.join(repr(o) for o in a.only)}"
        f"{'' if a.which == 'budget' else ' --set ' + a.which}{'' if a.lr_C == 'val' else ' --lr-C ' + a.lr_C}`). "
        + ("One-hot heads with the defaults' loss (cross-entropy), the MLP head fitted both ways; "
           if a.which == "mlp" else "One-hot heads (focal γ=2 unless stated), one factor changed at a time from the "
           "defaults; ") + "LogisticRegression on the same "
        "embeddings (`[text, image, masks]`, C from {0.1, 1, 10, 100} by validation top-1, refit on train "
        "only; `--lr-C`: the C that this selection chose in an earlier run). Test split, mean ± std over training seeds (the split is fixed: seed 0). `steps to best` = "
        "optimizer steps until the weights kept (the best epoch under early stopping, else the last).",
        "",
    ]
    for name in a.catalogs:
        df = run_catalog(name, a.seeds, a.only, a.which, a.lr_C if a.lr_C == "val" else float(a.lr_C))
        z = df.attrs["sizes"]
        parts += [f"## {name}: {z['classes']} classes, train {z['train']} / val {z['val']} / test {z['test']} "
                  f"items, {z['steps_per_epoch']} steps per epoch", "", table(df), ""]
    parts.append(f"Total {time.perf_counter() - t_all:.0f} s on {platform.processor() or platform.machine()}, "
                 f"torch threads {a.threads}, torch {torch.__version__}.")
    atomic_write_text(Path(a.out), "\n".join(parts) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
