"""The preconditioned full-batch solver against plain L-BFGS, on real catalogs.

For each catalog (default: the tutorial and the Amazon toys catalog, encoded once into work/ by
scripts/_bench_data.py) the six soft-label configurations of ``sk.default_suite()`` (one-hot,
uniform LS, top-20 uniform / semantic, tree, semantic with a similarity floor: the suite's linear
stack) are fitted stacked with :func:`semcat_kit.learn.solver.fit_stacked` at every C of the default
grid, cold (from zero, as the suite fits each C), with the default tolerance, twice:

* ``plain``: L-BFGS on the weights (``basis=False``);
* ``preconditioned``: in the eigenbasis of the features' covariance with the per-output curvature
  scales (:class:`semcat_kit.learn.solver.FeatureBasis`, its eigendecomposition timed too).

Prints, per C, the stack's objective evaluations (the most any problem needed: the stack's steps),
the time and the largest relative difference of the final objectives (which fit ended lower), then
``ratio:`` lines (plain / preconditioned: evaluations and time over the grid). Timings are medians of
``--repeat`` runs with the load average beside them. A record: ``--record docs/bench/solver.md``.
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

import semcat_kit as sk  # noqa: E402  (before torch: its import sets the OpenMP wait policy)
import torch  # noqa: E402
from semcat_kit._core import threads as _threads  # noqa: E402

TITLE = "The preconditioned full-batch solver against plain L-BFGS"
CS = (0.1, 1.0, 10.0, 100.0)


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _stack(name: str):
    """The suite's linear soft-label stack on catalog ``name``: (stack, loss, training table, N)."""
    import _bench_data
    from semcat_kit._core.contracts import as_embedding_table
    from semcat_kit.learn.losses import StackedLoss
    from semcat_kit.learn.solver import StackedHeads
    from semcat_kit.learn.training import loss_spec

    emb, y, tax, sp = _bench_data.load(name)
    nb = _bench_data.name_neighbors(tax)
    (tr, ytr), (va, yva), _ = _bench_data.pairs(emb, y, sp)
    configs = {n: c.resolve(len(ytr), len(yva), solver="lbfgs") for n, c in sk.default_suite().items()}
    configs = {n: c for n, c in configs.items() if c.label_repr != "codes"}
    data = as_embedding_table(tr, "train")
    head = sk.FusionHead(data.text_dim, data.image_dim, tax.n_classes, hidden=0, proj_dim=0,
                         input_norm=next(iter(configs.values())).input_norm, dropout=0.0).eval()
    stack = StackedHeads.for_head(head)
    specs = [loss_spec(c, tax.n_classes, taxonomy=tax, neighbors=nb) for c in configs.values()]
    return stack, StackedLoss(specs, ytr, tax.n_classes), data, list(configs), tax.n_classes


def _median(fn, repeat: int):
    times, out = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def compare(name: str, repeat: int) -> None:
    from semcat_kit.learn.solver import FeatureBasis, fit_stacked

    stack, loss, data, names, C = _stack(name)
    n, K = len(data), len(names)
    feats = stack.features(data)
    print(f"\n{name}: {n:,} train rows x {feats.shape[1] - 1:,} inputs, {C} classes, {K} stacked problems "
          f"({', '.join(names)}); {_threads.describe()}", flush=True)
    t_basis, basis = _median(lambda: FeatureBasis.of(feats), repeat)
    print(f"time_s eigenbasis of the features (once per suite): {t_basis:.2f}  [{_load()}]", flush=True)
    x0 = torch.zeros(K, stack.n_params)
    tot = {"plain": [0, 0.0], "preconditioned": [0, t_basis]}
    for c in CS:
        l2 = [1.0 / (c * n)] * K
        res = {}
        for how, b in (("plain", False), ("preconditioned", basis)):
            t, r = _median(lambda: fit_stacked(stack, loss, l2, data, x0, basis=b), repeat)
            res[how] = (t, r)
            tot[how][0] += r.evaluations
            tot[how][1] += t
        (tp, rp), (tq, rq) = res["plain"], res["preconditioned"]
        gap = ((rq.f.double() - rp.f.double()) / rp.f.double().abs()).numpy()
        print(f"C={c:g}: evaluations plain {rp.evaluations} / preconditioned {rq.evaluations}; time_s plain {tp:.2f} / "
              f"preconditioned {tq:.2f}; objective (preconditioned - plain) / plain from {gap.min():+.1e} to "
              f"{gap.max():+.1e}; converged plain {int(rp.converged.sum())}/{K}, preconditioned "
              f"{int(rq.converged.sum())}/{K}  [{_load()}]", flush=True)
    print(f"ratio: evaluations plain / preconditioned ({name}, C = {', '.join(f'{c:g}' for c in CS)}) = "
          f"{tot['plain'][0] / tot['preconditioned'][0]:.2f}")
    print(f"ratio: time plain / preconditioned ({name}, the eigenbasis included) = "
          f"{tot['plain'][1] / tot['preconditioned'][1]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1, help="runs per timing (median; default 1)")
    ap.add_argument("--catalogs", nargs="+", default=["tutorial", "toys"], help="catalogs (default: tutorial toys)")
    ap.add_argument("--record", metavar="MD", help="also write what is printed to this markdown file "
                    "(e.g. docs/bench/solver.md), with the command, the machine and the load average")
    args = ap.parse_args()
    from _record import recording

    warnings.simplefilter("ignore")
    with recording(args.record, TITLE), _threads.torch_threads(None):
        for name in args.catalogs:
            compare(name, args.repeat)


if __name__ == "__main__":
    main()
