"""The comparison suite: one stacked full-batch pass vs the old sequential minibatch loop vs the
LogisticRegression C grid, and the GEMM bound -- all measured in one run.

Tutorial shapes (the bundled catalog's real embeddings, minilm + efficientnet-lite0, encoded once
into work/ by scripts/_bench_data.py; 143 classes after merging stray paths):

* ``suite``: ``sk.default_suite()`` over 3 seeds with the data-aware defaults, as
  ``Workspace.suite`` trains it: linear heads, ``solver="auto"`` -> full-batch L-BFGS, every
  configuration of one shape stacked (the six soft-label kinds; the codes head on its own), one fit
  for every seed (convex);
* ``old loop``: the same configurations trained one ``sk.train`` run at a time as before this issue
  (``solver="minibatch"``, the MLP head proj 256 / hidden 512 with input LayerNorm, >= 600 AdamW
  steps), every seed; training only (compare()'s test scoring is not in it, so ``old loop / suite``
  is if anything understated). ``--old-seeds N``: the first N seeds, the time scaled to 3 seeds
  (every seed's runs have the same shapes), which the line says;
* ``LR grid``: ``LogisticBaseline()`` (4 cold scikit-learn fits, C chosen on validation);
* ``GEMM bound``: a lower bound of the suite's training arithmetic. The solver records, per round of
  the C walk, its problem-evaluations (each objective evaluation counted once per problem it covered:
  converged problems leave the stack, a backtracking step evaluates only the failing ones). Each
  problem-evaluation needs at least one forward + backward GEMM pair ``[h, 1] (n_train, d + 1) x
  W^T`` of one head's outputs; the pair is timed bare at every stack width 1..K (in the solver's row
  chunks) and the cheapest per-problem time at any width up to the round's is charged. Validation,
  losses, soft targets and the L-BFGS recursion are not counted.
* ``steps:`` lines: scikit-learn's ``n_iter_`` per C of the LR grid (refitted, untimed, with the
  peer's settings on the peer's features) and the suite's L-BFGS iterations per configuration per C
  fitted (``*``: the C chosen on validation).
* the quality table: each configuration's test top-1, macro-F1 and hdist@5 (means over the seeds)
  and, scored on the same test split with :func:`semcat_kit.evaluate`, the LR grid's model with and
  without CRM: does the suite beat its peer on this catalog, not only in time.

``--catalogs`` repeats the suite / LR grid / GEMM-bound lines on other catalogs (default: the tutorial,
the Amazon toys catalog, and a random 750-product sample of it, a catalog of its own with its own
classes); the old loop runs on the first only.

``--classes 5595`` adds synthetic embeddings at the Google taxonomy's size (2 items a class): one
L-BFGS step (``max_iter=1``) of 7 stacked one-hot problems vs 7 such steps one at a time, and the
GEMM bound of their problem-evaluations (timed on ``--classes-chunks`` row chunks of the solver's
size and scaled by rows, which the line says). ``--classes-repeat`` (default 1) runs per timing
there: at these shapes one stacked step takes one to two minutes on 2 cores. The line also says
which solver the toolkit itself picks at these shapes (minibatch: over its 1,000,000-parameter switch).

Prints ``time_s`` lines and ``ratio:`` lines (goals: suite / LR grid <= 3, GEMM bound / suite as
large as possible, at most 1). Medians of ``--repeat`` runs; the load average is printed with every
figure. A record with every section: ``--repeat 1 --old-seeds 1 --record docs/bench/suite.md``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

# semcat_kit before torch, as a user's session imports it: its import sets OMP_WAIT_POLICY=PASSIVE
# only while torch is not loaded yet (semcat_kit._core.threads.set_wait_policy)
import semcat_kit as sk  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from semcat_kit._core import threads as _threads  # noqa: E402



TITLE = "The comparison suite against the LogisticRegression grid"
SEEDS = (0, 1, 2)


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _median(f, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _pair_seconds(n: int, width: int, out: int, reps: int = 3, max_chunks: int | None = None) -> tuple[float, bool]:
    """``(seconds, scaled)``: one forward + backward GEMM pair ``z = [h, 1] W^T``, ``dW = dz^T [h, 1]``
    with ``[h, 1]`` of shape ``(n, width)`` and ``W`` of ``(out, width)``, over ``n`` rows in the row
    chunks the solver uses (:func:`semcat_kit.learn.solver._row_chunk`: at most 128 MB of logits).
    The median time of ``reps`` passes; with ``max_chunks`` and more chunks than that, only
    ``max_chunks`` chunks are timed and the time is scaled to ``n`` rows (``scaled`` True)."""
    from semcat_kit.learn.solver import _row_chunk

    chunk = _row_chunk(n, out * 4)
    n_chunks = -(-n // chunk)
    timed = n_chunks if max_chunks is None else min(n_chunks, max_chunks)
    rows = n if timed == n_chunks else timed * chunk
    h = torch.randn(chunk, width)
    w = torch.randn(out, width)
    g = torch.randn(chunk, out)
    sizes = [min(chunk, rows - a) for a in range(0, rows, chunk)]

    def step():
        for m in sizes:
            _ = h[:m] @ w.T
            _ = g[:m].T @ h[:m]
    step()
    return _median(step, reps) * n / rows, rows < n


class _PairCosts:
    """Per-problem time of a forward + backward GEMM pair, by (outputs per head, stack width, torch
    threads): ``_pair_seconds(n, width_in, k * out) / k`` under that many threads, timed once per key."""

    def __init__(self, n: int, width_in: int, reps: int = 3, max_chunks: int | None = None):
        self.n, self.width_in, self.reps, self.max_chunks = n, width_in, reps, max_chunks
        self.cost: dict = {}
        self.scaled = False

    def per_problem(self, out: int, k: int, threads: int | None = None) -> float:
        threads = int(threads or torch.get_num_threads())
        if (out, k, threads) not in self.cost:
            with _threads.torch_threads(threads):
                t, scaled = _pair_seconds(self.n, self.width_in, k * out, self.reps, self.max_chunks)
            self.cost[out, k, threads] = t / k
            self.scaled |= scaled
        return self.cost[out, k, threads]

    def cheapest(self, out: int, k: int, threads: int | None = None) -> float:
        """The cheapest per-problem pair at any stack width 1..k: the least any evaluation of a
        round that starts with k problems can cost per problem it covers."""
        return min(self.per_problem(out, j, threads) for j in range(1, int(k) + 1))

    def threads_used(self) -> str:
        return ",".join(str(t) for t in sorted({key[2] for key in self.cost}))


def _suite_runs(df) -> dict:
    """``{config name: TrainRun}`` of a compare() table, the first seed's run where runs differ by seed."""
    out = {}
    for (name, seed), run in df.attrs["runs"].items():
        if isinstance(run, sk.TrainRun) and (name not in out or seed == SEEDS[0]):
            out[name] = run
    return out


def _distinct(runs) -> list:
    """Every distinct full-batch TrainRun of a compare() table (a seed-free run is shared by the seeds)."""
    seen, out = set(), []
    for run in runs:
        if id(run) not in seen and isinstance(run, sk.TrainRun):
            seen.add(id(run))
            out.append(run)
    return out


def gemm_bound(runs, n_train: int, costs: _PairCosts | None = None) -> tuple[float, str]:
    """``(seconds, what)``: the GEMM lower bound of the full-batch runs ``runs`` (distinct
    :class:`TrainRun` objects) from their fit_path histories.

    Every row of a round repeats the round's ``problem_evaluations`` and ``round_problems``, so
    ``sum(problem_evaluations / round_problems)`` over a stack's rows counts each round once."""
    need = ("round_problems", "problem_evaluations")
    groups: dict = {}      # outputs per head -> [problem-evaluations, rounds, largest stack, runs]
    total = 0.0
    for run in runs:
        if run.solver.get("method") != "lbfgs":
            continue
        h = run.history
        missing = [c for c in need if c not in h.columns]
        if missing:
            raise RuntimeError(f"the run's history lacks {missing}: semcat_kit.learn.solver.fit_path records them")
        if run.config.hidden or run.config.proj_dim:
            raise ValueError("the GEMM bound counts linear heads only (an output layer on fixed features)")
        lin = run.model.mlp[-1]
        out, width_in = lin.out_features, lin.in_features + 1
        if costs is None:
            costs = _PairCosts(n_train, width_in)
        elif costs.width_in != width_in:
            raise ValueError("runs of different input widths")
        h = h.dropna(subset=list(need))
        g = groups.setdefault(out, [0.0, 0.0, 0, 0])
        g[3] += 1
        threads = h["threads"] if "threads" in h.columns else [None] * len(h)
        for rp, pe, nt in zip(h["round_problems"].astype(int), h["problem_evaluations"].astype(float), threads):
            g[0] += pe / rp
            g[1] += 1.0 / rp
            g[2] = max(g[2], rp)
            total += pe / rp * costs.cheapest(out, rp, None if nt is None or nt != nt else int(nt))
    if costs is None:
        return float("nan"), "no full-batch run to bound"
    parts = [f"{g[3]} head{'s' * (g[3] > 1)} x {out:,} outputs: {round(g[0]):,} problem-evaluations in "
             f"{round(g[1])} rounds of <= {g[2]} stacked" for out, g in groups.items()]
    what = (f"{'; '.join(parts)}; each a forward + backward GEMM pair over {n_train:,} rows x "
            f"{costs.width_in:,} inputs at the cheapest per-problem stack width up to its round's, "
            f"timed bare under the round's torch threads ({costs.threads_used()})"
            + (", timed on some row chunks and scaled by rows" if costs.scaled else ""))
    return total, what


def _lr_steps(lr, X, y) -> str:
    """scikit-learn's ``n_iter_`` per C of the LR grid: each C refitted as the peer fits it (untimed)."""
    from semcat_kit.experiments import baselines as _bl

    Cs = [float(c) for c in lr.Cs]
    fits = _bl._in_parallel(lambda c: _bl._fit_quiet(_bl._logreg(c, 0, lr.max_iter), X, y), Cs)
    return " ".join(f"C={c:g}:{int(np.max(m.n_iter_))}{'*' * (c == lr.C_)}" for c, m in zip(Cs, fits))


def _suite_steps(named: dict) -> str:
    """The suite's L-BFGS iterations per configuration per C fitted (``*``: the chosen C)."""
    parts = []
    for name, run in named.items():
        h = run.history
        if "iterations" not in h.columns or run.solver.get("method") != "lbfgs":
            continue
        chosen = run.solver.get("C")
        parts.append(name + " " + " ".join(f"C={float(c):g}:{int(i)}{'*' * (float(c) == chosen)}"
                                             for c, i in zip(h["C"], h["iterations"])))
    return "; ".join(parts)


def _sample(emb, y, n: int, seed: int = 0):
    """``(emb, y)`` of ``n`` products drawn at random (the caller makes it a small catalog of its own:
    the classes it has, split stratified as the notebooks split)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(y), size=min(n, len(y)), replace=False))
    return emb.take(rows), y[rows]


OLD_LOOP = {"hidden": 512, "proj_dim": 256, "input_norm": True, "min_steps": 600, "focal_gamma": 0.0,
            "early_stopping": None, "solver": "minibatch"}


def suite_vs_lr(args, name: str = "tutorial", sample: int | None = None, old_loop: bool = True) -> None:
    """The default suite (3 seeds) against the LogisticRegression C grid on catalog ``name`` (a random
    ``sample`` of it when given), with the GEMM bound; the old minibatch loop when ``old_loop``."""
    import _bench_data
    from semcat_kit.experiments.baselines import features

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
    seeds = SEEDS
    suite = {n: c.resolve(len(tr[1]), len(va[1])) for n, c in sk.default_suite().items()}
    print(f"\n{name}: {len(tr[1]):,} train / {len(va[1]):,} val / {len(te[1]):,} test, {tax.n_classes} classes, "
          f"{len(suite)} configurations x {len(seeds)} seeds; {_threads.describe()}", flush=True)
    runs = {}

    def fit_suite():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs["df"] = sk.compare(suite, tr, va, te, taxonomy=tax, neighbors=nb, seeds=seeds, progress=False)
    t_suite = _median(fit_suite, args.repeat)
    print(f"time_s suite (stacked full-batch): {t_suite:.2f}  [{_load()}]", flush=True)

    lr = {}

    def fit_lr():
        lr["m"] = sk.LogisticBaseline().fit(tr[0], tr[1], taxonomy=tax, val=va)
    t_lr = _median(fit_lr, args.repeat)
    print(f"time_s LR grid: {t_lr:.2f}  [{_load()}]", flush=True)

    df = runs["df"]
    t_gemm, what = gemm_bound(_distinct(df.attrs["runs"].values()), len(tr[1]))
    print(f"time_s GEMM bound ({what}): {t_gemm:.2f}  [{_load()}]", flush=True)
    print(f"steps: LR grid (sklearn n_iter_) {_lr_steps(lr['m'], features(tr[0]), np.asarray(tr[1]))}", flush=True)
    print(f"steps: suite (L-BFGS iterations) {_suite_steps(_suite_runs(df))}", flush=True)

    if old_loop and not args.quick:
        k = max(1, min(args.old_seeds, len(seeds)))
        old = {n: c.replace(**OLD_LOOP) for n, c in sk.default_suite().items()}

        def fit_old():      # the loop compare() runs for minibatch configurations, without its test scoring
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for cfg in old.values():
                    for seed in seeds[:k]:
                        sk.train(tr[0], tr[1], taxonomy=tax, neighbors=nb, config=cfg.replace(seed=seed), val=va,
                                 progress=False)
        t_meas = _median(fit_old, 1)
        t_old = t_meas * len(seeds) / k
        how = (f"{len(old)} configurations x {len(seeds)} seeds" if k == len(seeds) else
               f"{len(old)} configurations x {k} of the {len(seeds)} seeds measured: {t_meas:.2f} s, "
               f"scaled x{len(seeds) / k:g} to {len(seeds)} seeds")
        print(f"time_s old loop (sk.train one run at a time, training only: MLP proj 256 / hidden 512, minibatch "
              f"AdamW >= 600 steps; {how}): {t_old:.2f}  [{_load()}]", flush=True)
        print(f"ratio: old loop / suite = {t_old / t_suite:.2f}" + ("" if k == len(seeds) else "  (old loop scaled)"))
    print(f"ratio: suite / LR grid ({name}) = {t_suite / t_lr:.2f}  (goal <= 3)")
    print(f"ratio: GEMM bound / suite = {t_gemm / t_suite:.2f}  (least share of the suite's time its training GEMMs need)")
    cols = [c for c in ("top1_mean", "macro_f1_mean", "hdist@5_mean") if c in df.columns]
    table = df[cols].copy()
    # the peer on the same test split, scored as compare() scores the suite (its grid is deterministic)
    probs = lr["m"].predict_proba(te[0])
    for label, crm in (("LogisticRegression", False), ("LogisticRegression + CRM", True)):
        sc = sk.evaluate(probs, te[1], tax, ks=(1, 5), crm=crm)
        table.loc[label] = [sc[c[:-len("_mean")]] for c in cols]
    print(table.round(3).to_string())


def google(args) -> None:
    from semcat_kit.learn.losses import LossSpec, StackedLoss
    from semcat_kit.learn.solver import StackedHeads, fit_stacked
    from semcat_kit.learn.training import choose_solver

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
    pe = {}

    def stacked():
        pe["stacked"] = fit_stacked(stack, stacked_loss, [1e-4] * K, table, x0, max_iter=1).problem_evaluations

    def one_at_a_time():
        pe["single"] = sum(fit_stacked(stack, one_loss, [1e-4], table, x0[:1], max_iter=1).problem_evaluations
                           for _ in range(K))
    method, why = choose_solver(sk.TrainConfig(), table, n_classes=C)
    print(f"\n{C:,} classes, {n:,} items, {K} one-hot problems, one L-BFGS step each (max_iter=1), torch threads {torch.get_num_threads()}; "
          f"the toolkit's solver at these shapes: {method} ({why})", flush=True)
    reps = args.classes_repeat
    t_st = _median(stacked, reps)
    print(f"time_s stacked step: {t_st:.2f}  [{_load()}]", flush=True)
    t_seq = _median(one_at_a_time, reps)
    print(f"time_s {K} single steps: {t_seq:.2f}  [{_load()}]", flush=True)
    width_in = head.mlp[-1].in_features + 1
    costs = _PairCosts(n, width_in, reps=2, max_chunks=args.classes_chunks)
    b_st = pe["stacked"] * costs.cheapest(C, K)
    b_seq = pe["single"] * costs.per_problem(C, 1)
    chunk_note = ", timed on some row chunks and scaled by rows" if costs.scaled else ""
    print(f"time_s GEMM bound, stacked ({pe['stacked']} problem-evaluations x the cheapest per-problem forward + "
          f"backward GEMM pair over {n:,} rows x {width_in:,} inputs x {C:,} outputs at widths 1..{K}"
          f"{chunk_note}): {b_st:.2f}  [{_load()}]")
    print(f"time_s GEMM bound, single ({pe['single']} problem-evaluations x that pair at width 1{chunk_note}): "
          f"{b_seq:.2f}  [{_load()}]")
    print(f"ratio: {K} single steps / one stacked step = {t_seq / t_st:.2f}")
    print(f"ratio: GEMM bound / stacked step = {b_st / t_st:.2f}")
    print(f"ratio: GEMM bound / {K} single steps = {b_seq / t_seq:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (median; default 3)")
    ap.add_argument("--quick", action="store_true", help="skip the old minibatch loop (minutes)")
    ap.add_argument("--old-seeds", type=int, default=3, metavar="N",
                    help="time the old loop on the first N of the 3 seeds and scale to 3 (default 3: no scaling; "
                         "every seed's runs have the same shapes)")
    ap.add_argument("--classes", type=int, default=5595, help="the large-taxonomy case (0: skip)")
    ap.add_argument("--classes-repeat", type=int, default=1, help="runs per timing of the large-taxonomy case "
                    "(default 1: a stacked step takes one to two minutes on 2 cores)")
    ap.add_argument("--classes-chunks", type=int, default=2, metavar="N",
                    help="row chunks timed per GEMM pair of the large-taxonomy bound, scaled by rows (default 2)")
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
