"""Hedged decoding against plain top-1 decoding: N products (default 100,000) over the Google Product
Taxonomy (5,595 classes, every node a class, so 877 classes are also inner nodes).

Probabilities are float32 softmax rows with one dominant class (as a trained head gives), made chunk
by chunk (``--chunk`` rows; generation is not timed) so memory stays at one chunk. Timed on the same
chunks, summed over them (median of ``--repeats`` passes):

  * hedge     ``semcat_kit.judge.hedging.hedge(probs, tax, threshold)``: node probabilities from the
              sparse leaf -> ancestor operators, the greedy most-probable-child path, the decision
              (and ``is_leaf`` / ``needs_review``);
  * hedge T   the same at a calibrated temperature (``temperature=--temperature``, default 0.5):
              the tempered probabilities first, and the reported node probability from the
              untempered ones (what ``Predictor.predict(precision=)`` does when T != 1);
  * top-1     ``semcat_kit.judge.decoding.topk(probs, 1)``: the decoder ``Predictor.predict`` and
              ``evaluate`` use (deterministic ties);
  * argmax    ``numpy.argmax(probs, axis=1)``: a floor (no tie rule), for reference.

Prints ``ratio: hedge / top-1 = ...`` (goal <= 2), ``ratio: hedge T / top-1`` and ``ratio: hedge / argmax = ...``, and checks
on the first chunk that the hedged leaves are the top-1 class wherever the threshold is >= 0.5.

    python bench/bench_hedging.py [--n 100000] [--chunk 8192] [--threshold 0.9] [--temperature 0.5] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semcat_kit import Taxonomy  # noqa: E402
from semcat_kit.judge.decoding import topk  # noqa: E402
from semcat_kit.judge.hedging import hedge, hedge_tree  # noqa: E402

DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))
TAX_FILE = DATA / "google-product-taxonomy" / "taxonomy-with-ids.en-US.txt"


def chunk_probs(rng, n: int, C: int) -> np.ndarray:
    """Softmax of Gaussian logits with one class pushed up by 4-12 (top-1 probability spread over (0, 1))."""
    z = rng.standard_normal((n, C), dtype=np.float32)
    z[np.arange(n), rng.integers(0, C, n)] += rng.uniform(4, 12, n).astype(np.float32)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if not TAX_FILE.exists():
        sys.exit(f"Google taxonomy not found at {TAX_FILE} (set SEMCAT_SHARED_DATA)")
    tax = Taxonomy.from_google_taxonomy(TAX_FILE)
    C = tax.n_classes
    t0 = time.perf_counter()
    tree = hedge_tree(tax)
    build = time.perf_counter() - t0
    print(f"Google taxonomy: C={C} classes ({tree.n_inner} inner nodes, {tree.n_nodes} hedge nodes), depth "
          f"{tax.max_depth}; N={args.n} products in chunks of {args.chunk}; threshold {args.threshold}; "
          f"median of {args.repeats}")
    print(f"hedge tree built once in {build:.3f} s (to_inner nnz {tree.to_inner.nnz}, up nnz {tree.up.nnz})")
    sizes = [min(args.chunk, args.n - a) for a in range(0, args.n, args.chunk)]
    totals = {"hedge": [], "hedge T": [], "top-1": [], "argmax": []}
    leaves = 0
    for rep in range(args.repeats):
        rng = np.random.default_rng(0)
        acc = dict.fromkeys(totals, 0.0)
        for i, m in enumerate(sizes):
            p = chunk_probs(rng, m, C)
            t = time.perf_counter()
            h = hedge(p, tax, args.threshold)
            acc["hedge"] += time.perf_counter() - t
            t = time.perf_counter()
            hedge(p, tax, args.threshold, temperature=args.temperature)
            acc["hedge T"] += time.perf_counter() - t
            t = time.perf_counter()
            top = topk(p, 1)[:, 0]
            acc["top-1"] += time.perf_counter() - t
            t = time.perf_counter()
            np.argmax(p, axis=1)
            acc["argmax"] += time.perf_counter() - t
            if rep == 0:
                leaves += int(h.is_leaf.sum())
                if i == 0 and args.threshold >= 0.5 and not (h.class_index[h.is_leaf] == top[h.is_leaf]).all():
                    sys.exit("check failed: a hedged leaf is not the top-1 class")
        for k in totals:
            totals[k].append(acc[k])
    med = {k: float(np.median(v)) for k, v in totals.items()}
    for k, v in med.items():
        print(f"{k:>8s}: {v:8.3f} s   ({args.n / v:,.0f} products/s)")
    print(f"leaves: {leaves / args.n:.3f} of the products at threshold {args.threshold}")
    print(f"ratio: hedge / top-1 = {med['hedge'] / med['top-1']:.2f}  (goal <= 2)")
    print(f"ratio: hedge T / top-1 = {med['hedge T'] / med['top-1']:.2f}  (at temperature {args.temperature:g}; goal <= 2)")
    print(f"ratio: hedge / argmax = {med['hedge'] / med['argmax']:.2f}  (numpy argmax, no tie rule: reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
