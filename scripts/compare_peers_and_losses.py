"""Peers and loss ablation on one catalog: peers, semcat configurations, the tuner and the seed's loss ablation.

On one stratified split (seed 0; scripts/_bench_data.py) and 3 training seeds:

1. **Peers and semcat configurations** (:func:`semcat_kit.compare`, test split): LogisticRegression on
   the same embeddings (C chosen on val, refit on train) and + CRM, hiclass LCPPN (LR per parent
   node), the one-hot head with the old defaults (30 epochs, early stopping on val top-1) and with
   the new ones (``min_steps``), tree soft labels, semantic soft labels over class-name neighbours
   and over name + class-prototype neighbours (with and without a per-class mass), and the
   configuration found by ``sk.tune`` for "lowest hdist@5 with top1 >= baseline - 0.5pt" (trained on
   train, scored on val), each + CRM.
2. **The seed's loss ablation** (:func:`semcat_kit.experiments.comparison.loss_suite`): focal only, KL only,
   focal + KL, alpha inverse / effective, with head / torso / tail metrics.

Writes ``docs/experiments/<part>_<catalog>.md`` (``peers``, ``loss_ablation``, ``prototypes``; several parts:
the names joined, e.g. ``peers_loss_ablation_tutorial.md``).

Usage: PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/compare_peers_and_losses.py --catalog tutorial
       [--seeds 0 1 2] [--tune-trials 10] [--tune-timeout 900]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
import torch

import _bench_data as bd
import semcat_kit as sk
from semcat_kit._core.io import atomic_write_text
from semcat_kit.experiments.comparison import baseline_suite, format_table, loss_suite

METRICS = ("top1", "macro_f1", "mistake_severity", "hdist@5")
BUCKET_METRICS = tuple(f"{m}[{b}]" for b in ("head", "torso", "tail") for m in ("top1", "macro_f1"))
OBJECTIVE = "hdist@5; top1 >= baseline - 0.5pt"


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    rows = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def head_defaults(n_train: int, n_val: int) -> dict:
    """The budget of every semcat row: what ``TrainConfig.resolve`` decides for this split (as every
    path that trains does: a step budget, no early stopping on a small validation split;
    docs/training_*.md). A config's own fields win."""
    return sk.TrainConfig().resolve(n_train, n_val).decided


def _dd(cfg: "sk.TrainConfig", tr, va) -> "sk.TrainConfig":
    return cfg.resolve(len(tr[1]), len(va[1]))


def run(name: str, seeds, trials: int, timeout: float, parts=("main", "ablation"), path=None, tuned=None,
        lr_C="val", lite=False, only=None) -> str:
    t_all = time.perf_counter()
    tune_secs = cmp_secs = abl_secs = 0.0
    emb, y, tax, sp = bd.load(name)
    tr, va, te = bd.pairs(emb, y, sp)
    C = tax.n_classes
    enc = sk.encoders.load("minilm")
    names = enc.encode_texts(sk.similarity.class_texts(tax))
    name_nb = sk.similarity.label_neighbors(names, k=20)
    modality = "fused" if emb.image is not None else "text"
    protos = sk.similarity.prototype_embeddings(tr[0], tr[1], C, modality=modality, name_embeddings=names)
    proto_nb = sk.similarity.blend_sources({"names": (0.5, names), "prototypes": (0.5, protos)}, k=20)
    H = head_defaults(len(tr[1]), len(va[1]))
    out = [f"# Peers and loss ablation: {name}", "",
           f"{C} classes; train {len(tr[1])} / val {len(va[1])} / test {len(te[1])} items (split seed 0); "
           f"training seeds {list(seeds)}; embeddings: minilm{' + efficientnet-lite0' if emb.image is not None else ''}. "
           f"Written by `scripts/compare_peers_and_losses.py --catalog {name}`{' --only ' + ' '.join(repr(o) for o in only) if only else ''}. Test split, mean ± std over seeds "
           "(baselines are deterministic: std 0). `+ CRM` rows re-decode the same runs. Heads: the data-aware "
           f"defaults `{H}` (`TrainConfig.resolve`, as every path that trains decides them).", ""]

    def flush(lines):
        if path is not None:
            atomic_write_text(path, "\n".join(lines) + "\n")

    if "protos" in parts:      # the class-prototype rows only, beside one-hot and name neighbours
        kw = dict(train=tr, val=va, test=te, taxonomy=tax, seeds=seeds, progress=False, allow_unseen_val_classes=True)
        t0 = time.perf_counter()
        a = sk.compare({"one-hot": sk.TrainConfig(**H),
                        "semantic α=0.1 (names)": sk.TrainConfig(smoothing="semantic", k=20, alpha=0.1, **H)},
                       neighbors=name_nb, **kw)
        b = sk.compare({"semantic α=0.1 (names + prototypes)": sk.TrainConfig(smoothing="semantic", k=20, alpha=0.1, **H),
                        "semantic α=0.1 (names + prototypes), α by similarity":
                            sk.TrainConfig(smoothing="semantic", k=20, alpha=0.1, alpha_by="similarity", **H)},
                       neighbors=proto_nb, **kw)
        out += ["## Class-prototype neighbours", "",
                f"Neighbours: name cosine (minilm class paths) vs 0.5 name + 0.5 {modality} prototype cosine "
                "(`similarity.blend_sources`); `α by similarity`: per-class mass `similarity.class_alpha`.", "",
                format_table(pd.concat([a, b]), METRICS), "",
                f"Time: {time.perf_counter() - t0:.0f} s."]
        flush(out)
        return "\n".join(out) + "\n"
    if "main" not in parts:
        return _ablation(out, name, tr, va, te, tax, name_nb, seeds, flush, t_all)
    # ---- the tuner (train -> val)
    t0 = time.perf_counter()
    if tuned is not None:      # a config found by an earlier run of the tuner (its record is in the log), or {}
        res = None
    else:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sk.tune(tr, va, taxonomy=tax, neighbors=name_nb, objective=OBJECTIVE, n_trials=trials,
                      timeout=timeout, base_config=sk.TrainConfig(**H), progress=False,
                      search_space={"steps": (150, 700)},
                      allow_unseen_val_classes=True)
    tune_secs = time.perf_counter() - t0
    tuned_cfg = res.config if res is not None else (sk.TrainConfig.from_dict(tuned) if tuned else None)
    print(f"{name}: tuned in {tune_secs:.0f}s: {res if res is not None else tuned_cfg}", flush=True)

    # ---- peers and semcat configurations
    peers = baseline_suite(C=lr_C) if not lite else {"LogisticRegression": sk.LogisticBaseline(C=lr_C),
                                                     "hiclass LCPPN": sk.HiClassBaseline(C=10.0)}
    cfgs = {**peers,
            **({} if lite else {"one-hot, old defaults (30 ep, ES)": sk.TrainConfig()}),
            "one-hot": sk.TrainConfig(**H),
            "tree α=0.1": sk.TrainConfig(smoothing="tree", k=20, alpha=0.1, **H),
            "tree α=0.3": sk.TrainConfig(smoothing="tree", k=20, alpha=0.3, **H),
            "tree α=0.5": sk.TrainConfig(smoothing="tree", k=20, alpha=0.5, **H),
            "tree α=0.3, focal α inverse": sk.TrainConfig(smoothing="tree", k=20, alpha=0.3, focal_alpha="inverse", **H),
            "semantic α=0.1": sk.TrainConfig(smoothing="semantic", k=20, alpha=0.1, **H),
            "binary codes": sk.TrainConfig(label_repr="codes", **H),
            **({"tuned": tuned_cfg} if tuned_cfg is not None else {})}
    if only:                   # a subset of the semcat rows (one-hot and the peers always run)
        cfgs = {k: v for k, v in cfgs.items() if k in peers or k == "one-hot" or k in only or k == "tuned"}
    else:
        for extra in ("tree α=0.5", "tree α=0.3, focal α inverse"):   # measured separately (--only)
            cfgs.pop(extra)
    crm = [c for c in ["LogisticRegression", "one-hot", "tree α=0.1", "tree α=0.3", "tree α=0.5",
                       "tree α=0.3, focal α inverse", "semantic α=0.1",
                       "binary codes", "tuned"] if c in cfgs]
    kw = dict(train=tr, val=va, test=te, taxonomy=tax, seeds=seeds, progress=False, allow_unseen_val_classes=True)
    t0 = time.perf_counter()
    main_df = sk.compare(cfgs, neighbors=name_nb, crm_for=crm, **kw)
    proto_cfgs = {"semantic α=0.1 (names + prototypes)": sk.TrainConfig(smoothing="semantic", k=20, alpha=0.1, **H),
                  "semantic α=0.1 (names + prototypes), α by similarity":
                      sk.TrainConfig(smoothing="semantic", k=20, alpha=0.1, alpha_by="similarity", **H)}
    if lite:
        table = main_df
    else:
        proto_df = sk.compare(proto_cfgs, neighbors=proto_nb, crm_for=list(proto_cfgs), **kw)
        table = pd.concat([main_df, proto_df])
    cmp_secs = time.perf_counter() - t0
    out += ["## Peers and semcat configurations", "", format_table(table, METRICS), "",
            f"Mean training seconds per run: " + ", ".join(f"{i}: {v:.1f}" for i, v in
                                                            table["train_seconds_mean"].items() if "CRM" not in i), ""]
    lr = table.loc["LogisticRegression"]
    oh = table.loc["one-hot"]
    semcat_rows = [i for i in table.index if i not in ("LogisticRegression", "LogisticRegression + CRM",
                                                        "hiclass LCPPN")]
    ok = []
    for i in semcat_rows:
        r = table.loc[i]
        meets = (r["top1_mean"] >= lr["top1_mean"] - 0.005 and r["macro_f1_mean"] >= lr["macro_f1_mean"] - 0.005
                 and r["hdist@5_mean"] <= 0.8 * oh["hdist@5_mean"]
                 and r["mistake_severity_mean"] <= 0.9 * oh["mistake_severity_mean"])
        ok.append((i, r["top1_mean"] - lr["top1_mean"], r["macro_f1_mean"] - lr["macro_f1_mean"],
                   r["hdist@5_mean"] / oh["hdist@5_mean"] - 1, r["mistake_severity_mean"] / oh["mistake_severity_mean"] - 1,
                   meets))
    out += ["### Against the issue's goal", "",
            "Δ vs LogisticRegression (points) and vs the one-hot head (relative). Goal: top-1 and macro-F1 ≥ LR − 0.5 pt, "
            "hdist@5 ≥ 20% lower and severity ≥ 10% lower than one-hot.", "",
            "| config | Δtop-1 vs LR | Δmacro-F1 vs LR | hdist@5 vs one-hot | severity vs one-hot | goal met |",
            "|---|---:|---:|---:|---:|:---:|"]
    for i, a, b, c, d, m in ok:
        out.append(f"| {i} | {100 * a:+.1f} | {100 * b:+.1f} | {100 * c:+.0f}% | {100 * d:+.0f}% | {'yes' if m else 'no'} |")
    if res is None and tuned_cfg is None:
        out += ["", "No tuned row in this run (`--tuned '{}'`).", ""]
    elif res is None:
        out += ["", "## The tuner", "", f"The tuned row is `{tuned_cfg!r}`, found by an earlier `sk.tune` run "
                "(see docs/experiments/README.md for its trials).", ""]
    else:
      out += ["", "## The tuner", "",
            f"`sk.tune(objective={OBJECTIVE!r}, n_trials={trials}, timeout={timeout:g}, "
            f"search_space={{'steps': (150, 700)}})`, base settings "
            f"`{H}`; {len(res.trials)} trials in {tune_secs:.0f} s, scored on the validation split. "
            f"Best: {res!r}", "",
            "Validation references: " + ", ".join(f"{n}: top1 {s['top1']:.3f}, hdist@5 {s['hdist@5']:.3f}"
                                                  for n, s in res.references.items()), "",
            res.trials[[c for c in ("number", "label_repr", "smoothing", "alpha", "k", "focal_gamma", "focal_alpha", "kl_weight",
                                    "hidden", "steps", "crm", "val_top1", "val_hdist@5", "feasible", "seconds")
                        if c in res.trials.columns]].round(4).pipe(_md), ""]

    flush(out + [f"Time: tuner {tune_secs:.0f} s, comparison {cmp_secs:.0f} s on {platform.machine()} (shared)."])
    if "ablation" not in parts:
        return "\n".join(out) + "\n" + f"Time: tuner {tune_secs:.0f} s, comparison {cmp_secs:.0f} s.\n"
    return _ablation(out, name, tr, va, te, tax, name_nb, seeds, flush, t_all)


def _ablation(out, name, tr, va, te, tax, name_nb, seeds, flush, t_all) -> str:
    C = tax.n_classes
    kw = dict(train=tr, val=va, test=te, taxonomy=tax, seeds=seeds, progress=False, allow_unseen_val_classes=True)
    # ---- the seed's loss ablation with frequency buckets
    t0 = time.perf_counter()
    suite = {n: _dd(c, tr, va) for n, c in loss_suite(smoothing="semantic", k=20, alpha=0.1).items()}
    abl = sk.compare(suite, neighbors=name_nb, by_frequency=True, **kw)
    abl_secs = time.perf_counter() - t0
    b = sk.frequency.frequency_buckets(tr[1], C)
    t1, t2 = sk.frequency.frequency_cutoffs(tr[1], C)
    counts = np.bincount(tr[1], minlength=C)
    desc = ", ".join(f"{k}: {int((b == k).sum())} classes" + (f" ({int(counts[b == k].min())}–{int(counts[b == k].max())} "
                     "training items)" if (b == k).any() else "") for k in ("head", "torso", "tail"))
    some = next(iter(suite.values()))
    out += ["## The seed's loss ablation (semantic soft labels over name neighbours)", "",
            f"Training: the data-aware defaults ({', '.join(f'{k}={v!r}' for k, v in some.decided.items())}"
            "; each row's own loss settings win).", "",
            "Frequency buckets = thirds of the classes by training count, equal counts never split "
            f"(`frequency.frequency_cutoffs`: head n_c ≥ {t2}, torso {t1} ≤ n_c < {t2}, tail n_c < {t1}): {desc}.", "",
            format_table(abl, METRICS), "", format_table(abl, BUCKET_METRICS), ""]
    out.append(f"Time: ablation {abl_secs:.0f} s, this part in total {time.perf_counter() - t_all:.0f} s on "
               f"{platform.machine()} (shared, torch threads {torch.get_num_threads()}).")
    flush(out)
    return "\n".join(out) + "\n"


#: the file name of each part's record (``docs/experiments/<name>_<catalog>.md``)
PART_FILES = {"main": "peers", "ablation": "loss_ablation", "protos": "prototypes"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", required=True, choices=bd.CATALOGS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--tune-trials", type=int, default=8)
    ap.add_argument("--tune-timeout", type=float, default=600)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parts", nargs="+", default=["main", "ablation"], choices=["main", "ablation", "protos"])
    ap.add_argument("--tuned", default=None, help="JSON TrainConfig dict: skip the tuner, use this config")
    ap.add_argument("--lr-C", default="val", help="LogisticRegression C ('val' = chosen on the validation split)")
    ap.add_argument("--lite", action="store_true", help="fewer rows (no old-defaults row, no prototype rows, "
                    "hiclass with C=10) for a loaded machine")
    ap.add_argument("--only", nargs="+", default=None, help="main part: only these semcat rows (plus one-hot and "
                    "the peers), e.g. 'tree α=0.5'")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    # named by what it measures: docs/experiments/peers_<catalog>.md, loss_ablation_<catalog>.md, ...
    what = "_".join(PART_FILES[p] for p in a.parts)
    path = Path(a.out or bd.ROOT / "docs" / "experiments" / f"{what}_{a.catalog}.md")
    import json

    text = run(a.catalog, a.seeds, a.tune_trials, a.tune_timeout, parts=a.parts, path=path,
               tuned=json.loads(a.tuned) if a.tuned else None,
               lr_C=a.lr_C if a.lr_C == "val" else float(a.lr_C), lite=a.lite, only=a.only)
    atomic_write_text(path, text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
