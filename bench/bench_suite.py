"""The comparison suite: one stacked full-batch pass vs the old sequential minibatch loop vs the
LogisticRegression C grid, and the GEMM bound -- all measured in one run.

Tutorial shapes (the bundled catalog's real embeddings, minilm + efficientnet-lite0, encoded once
into work/ by scripts/_bench_data.py; 154 classes):

* ``suite``: ``sk.default_suite()`` over 3 seeds with the data-aware defaults, as
  ``Workspace.suite`` trains it: linear heads, ``solver="auto"`` -> full-batch L-BFGS, every
  configuration of one shape stacked, one fit for every seed (convex);
* ``old loop``: the same configurations one run at a time as before (``solver="minibatch"``, the
  MLP head proj 256 / hidden 512 with input LayerNorm, >= 600 AdamW steps), every seed;
* ``LR grid``: ``LogisticBaseline()`` (4 cold scikit-learn fits, C chosen on validation);
* ``GEMM bound``: the suite's objective evaluations times a bare forward + backward GEMM of the
  stacked linear head at the same shapes (all problems active: an upper bound on its GEMM work).

``--catalogs`` repeats the suite / LR grid / GEMM-bound lines on other catalogs (default: the tutorial,
the Amazon toys catalog, and a random 750-product sample of it, a catalog of its own with its own
classes); the old loop runs on the first only.

``--classes 5595`` adds synthetic embeddings at the Google taxonomy's size (2 items a class): one
stacked evaluation of the 7 suite problems vs 7 evaluations one at a time, and the bare GEMM.

Prints ``time_s`` lines and ``ratio:`` lines (goals: suite / LR grid <= 3, GEMM bound / suite as
large as possible). Medians of ``--repeat`` runs; the load average is printed with every figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import semcat_kit as sk  # noqa: E402



TITLE = "The comparison suite against the LogisticRegression grid"

def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _median(f, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _gemm_seconds(n: int, width: int, out: int, reps: int = 5) -> float:
    """One forward + backward GEMM pair of ``[h, 1] (n, width) x W^T (width, out)``."""
    h = torch.randn(n, width)
    w = torch.randn(out, width)
    g = torch.randn(n, out)

    def step():
        _ = h @ w.T
        _ = g.T @ h
    step()
    return _median(step, reps)


def _sample(emb, y, n: int, seed: int = 0):
    """``(emb, y, taxonomy, split)`` of ``n`` products drawn at random (a small catalog of its own:
    the classes it has, split stratified as the notebooks split)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(y), size=min(n, len(y)), replace=False))
    return emb.take(rows), y[rows]


def suite_vs_lr(args, name: str = "tutorial", sample: int | None = None, old_loop: bool = True) -> None:
    """The default suite (3 seeds) against the LogisticRegression C grid on catalog ``name`` (a random
    ``sample`` of it when given), with the GEMM bound; the old minibatch loop when ``old_loop``."""
    import _bench_data

    emb, y, tax, sp = _bench_data.load(name)
    if sample:
        emb, y = _sample(emb, y, sample)
        labels = np.asarray(tax.classes, dtype=object)[y]
        tax = sk.Taxonomy.from_paths(labels, sep=tax.sep)
        y = np.asarray(tax.index_of(labels))
        sp = sk.split(labels, val=0.1, test=0.2, seed=0)
        name = f"{name} sample of {len(y):,}"
    nb = _bench_data.name_neighbors(tax)
    tr, va, te = _bench_data.pairs(emb, y, sp)
    seeds = (0, 1, 2)
    suite = {n: c.resolve(len(tr[1]), len(va[1])) for n, c in sk.default_suite().items()}
    print(f"\n{name}: {len(tr[1]):,} train / {len(va[1]):,} val / {len(te[1]):,} test, {tax.n_classes} classes, "
          f"{len(suite)} configurations x {len(seeds)} seeds, torch threads {torch.get_num_threads()}", flush=True)
    runs = {}

    def fit_suite():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs["df"] = sk.compare(suite, tr, va, te, taxonomy=tax, neighbors=nb, seeds=seeds, progress=False)
    t_suite = _median(fit_suite, args.repeat)
    print(f"time_s suite (stacked full-batch): {t_suite:.2f}  [{_load()}]", flush=True)

    def fit_lr():
        sk.LogisticBaseline().fit(tr[0], tr[1], taxonomy=tax, val=va)
    t_lr = _median(fit_lr, args.repeat)
    print(f"time_s LR grid: {t_lr:.2f}  [{_load()}]", flush=True)

    # the GEMM bound of the suite's evaluations
    df = runs["df"]
    evals, widths = 0, []
    seen = set()
    for (_, seed), run in df.attrs["runs"].items():
        if id(run) in seen or not isinstance(run, sk.TrainRun):
            continue
        seen.add(id(run))
        evals_run = int(run.history.get("evaluations", run.history["iterations"] + 1).sum())
        evals = max(evals, evals_run)
        widths.append(run.model.mlp[-1].out_features)
    width_in = sum(m.shape[1] for m in (tr[0].text, tr[0].image) if m is not None) + 3
    t_gemm = evals * _gemm_seconds(len(tr[1]), width_in, sum(widths))
    print(f"time_s GEMM bound ({evals} evaluations of the {len(widths)} stacked heads): {t_gemm:.2f}  [{_load()}]",
          flush=True)

    if old_loop and not args.quick:
        old_defaults = {"min_steps": 600, "focal_gamma": 0.0, "early_stopping": None, "solver": "minibatch"}
        old = {n: c.replace(**old_defaults) for n, c in sk.default_suite().items()}

        def fit_old():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sk.compare(old, tr, va, te, taxonomy=tax, neighbors=nb, seeds=seeds, progress=False)
        t_old = _median(fit_old, 1)
        print(f"time_s old loop (minibatch, one run at a time): {t_old:.2f}  [{_load()}]", flush=True)
        print(f"ratio: old loop / suite = {t_old / t_suite:.2f}")
    print(f"ratio: suite / LR grid ({name}) = {t_suite / t_lr:.2f}  (goal <= 3)")
    print(f"ratio: GEMM bound / suite = {t_gemm / t_suite:.2f}  (share of the suite's time in its GEMMs)")
    cols = [c for c in ("top1_mean", "macro_f1_mean", "hdist@5_mean") if c in df.columns]
    print(df[cols].round(3).to_string())


def google(args) -> None:
    from semcat_kit.learn.losses import LossSpec, StackedLoss
    from semcat_kit.learn.solver import StackedHeads, fit_stacked

    C = args.classes
    n = 2 * C
    g = torch.Generator().manual_seed(0)
    text, image = torch.randn(n, 384, generator=g), torch.randn(n, 1280, generator=g)
    emb = sk.Embeddings(np.arange(n).astype(str), text.numpy(), image.numpy(), np.ones(n, bool), np.ones(n, bool))
    table = sk.contracts.as_embedding_table(emb)
    y = np.arange(n) % C
    head = sk.FusionHead(384, 1280, C, hidden=0, proj_dim=0, input_norm=False).eval()
    stack = StackedHeads.for_head(head)
    K = 7
    specs = [LossSpec() for _ in range(K)]
    x0 = torch.zeros(K, stack.n_params)
    stacked_loss = StackedLoss(specs, y, C)
    one_loss = StackedLoss(specs[:1], y, C)

    def stacked():
        fit_stacked(stack, stacked_loss, [1e-4] * K, table, x0, max_iter=1)

    def one_at_a_time():
        for _ in range(K):
            fit_stacked(stack, one_loss, [1e-4], table, x0[:1], max_iter=1)
    t_st = _median(stacked, args.repeat)
    t_seq = _median(one_at_a_time, args.repeat)
    evals = 2   # max_iter=1: the first evaluation and one trial step
    t_gemm = evals * _gemm_seconds(n, 384 + 1280 + 3, K * C, reps=2)
    print(f"\n{C:,} classes, {n:,} items: time_s stacked step {t_st:.2f}, {K} single steps {t_seq:.2f}, "
          f"GEMM bound {t_gemm:.2f}  [{_load()}]")
    print(f"ratio: {K} single steps / one stacked step = {t_seq / t_st:.2f}")
    print(f"ratio: GEMM bound / stacked step = {t_gemm / t_st:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (median; default 3)")
    ap.add_argument("--quick", action="store_true", help="skip the old minibatch loop (minutes)")
    ap.add_argument("--classes", type=int, default=5595, help="the large-taxonomy case (0: skip)")
    ap.add_argument("--catalogs", nargs="+", default=["tutorial", "toys", "toys:750"],
                    help="catalogs of the suite / LR grid ratio: tutorial, toys, myntra, NAME:N for a random "
                         "sample of N products (default: tutorial toys toys:750)")
    ap.add_argument("--record", metavar="MD", help="also write what is printed to this markdown file "
                    "(e.g. docs/bench/suite.md), with the command, the machine and the load average")
    args = ap.parse_args()
    from _record import recording

    with recording(args.record, TITLE):
        for i, spec in enumerate(args.catalogs):
            name, _, n = spec.partition(":")
            suite_vs_lr(args, name, int(n) if n else None, old_loop=i == 0)
        if args.classes:
            google(args)


if __name__ == "__main__":
    main()
