"""CRM decoding on the Google Product Taxonomy (5,595 classes), 1,000 samples of Dirichlet probabilities.

Compares, in one run (median of REPEATS):
  * semcat_kit exact CRM (`crm_rerank`, subtree-mass aggregation, no C x C matrix)
  * baseline "dense": build the C x C float distance matrix, then probs @ D
    (reported with and without building D, i.e. also when D is cached)
  * baseline "blocked rows": distance columns from taxonomy.lca_distance in blocks, probs @ block
  * semcat_kit top-m CRM (`crm_rerank(top_m=100)`)
and checks that the exact version equals the dense one.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semcat_kit import Taxonomy  # noqa: E402
from semcat_kit.judge.metrics import crm_predict, crm_rerank  # noqa: E402

DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))
TAX_FILE = DATA / "google-product-taxonomy" / "taxonomy-with-ids.en-US.txt"
N, REPEATS, TOP_M = 1000, 3, 100


def timed(fn, repeats=REPEATS):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), times, out


def dense_matrix(tax):
    return tax.distance_matrix().astype(np.float64)


def blocked_rows(probs, tax, block=256):
    C = tax.n_classes
    out = np.empty((probs.shape[0], C))
    rows = np.arange(C)[:, None]
    for s in range(0, C, block):
        cols = np.arange(s, min(C, s + block))
        out[:, cols] = probs @ tax.lca_distance(rows, cols[None, :]).astype(np.float64)
    return out


def main():
    if not TAX_FILE.exists():
        sys.exit(f"Google taxonomy not found at {TAX_FILE} (set SEMCAT_SHARED_DATA)")
    tax = Taxonomy.from_google_taxonomy(TAX_FILE)
    C = tax.n_classes
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(C, 0.02), size=N)
    print(f"Google taxonomy: C={C} classes, depth {tax.max_depth}; N={N} samples; median of {REPEATS}")

    crm_rerank(probs[:10], tax)  # warm the cached sparse ancestor operators (built once per taxonomy)
    t_exact, r_exact, exact = timed(lambda: crm_rerank(probs, tax))
    t_build, r_build, D = timed(lambda: dense_matrix(tax))
    t_mul, r_mul, dense = timed(lambda: probs @ D)
    t_dense = t_build + t_mul
    t_block, r_block, blocked = timed(lambda: blocked_rows(probs, tax), repeats=1)
    t_topm, r_topm, topm = timed(lambda: crm_rerank(probs, tax, top_m=TOP_M))
    t_pred, r_pred, (idx, _) = timed(lambda: crm_predict(probs, tax, top_k=5))

    err = np.abs(-exact - dense).max()
    err_b = np.abs(blocked - dense).max()
    agree_topm = float((np.argmax(topm, 1) == idx[:, 0]).mean())
    agree_arg = float((probs.argmax(1) == idx[:, 0]).mean())
    print(f"exact crm_rerank       : {t_exact:8.3f} s  raw {['%.3f' % t for t in r_exact]}")
    print(f"dense D build (C x C)  : {t_build:8.3f} s  raw {['%.3f' % t for t in r_build]}")
    print(f"dense probs @ D        : {t_mul:8.3f} s  raw {['%.3f' % t for t in r_mul]}")
    print(f"blocked lca rows       : {t_block:8.3f} s  raw {['%.3f' % t for t in r_block]}")
    print(f"top-m (m={TOP_M}) rerank : {t_topm:8.3f} s  raw {['%.3f' % t for t in r_topm]}")
    print(f"crm_predict top-5 exact: {t_pred:8.3f} s  raw {['%.3f' % t for t in r_pred]}")
    print(f"max |exact - dense| = {err:.2e} (ties rounded at 1e-9); max |blocked - dense| = {err_b:.2e}")
    print(f"top-1 agreement: top-m vs exact {agree_topm:.3f}; CRM vs argmax {agree_arg:.3f} "
          f"(diffuse random probs: CRM backs off to shallower classes, mean depth "
          f"{tax.depth(idx[:, 0]).mean():.2f} vs argmax {tax.depth(probs.argmax(1)).mean():.2f})")
    peaked = 0.3 * np.eye(C)[rng.integers(0, C, 300)] + 0.7 * rng.dirichlet(np.full(C, 0.02), size=300)
    pi, _ = crm_predict(peaked, tax, top_k=1)
    pm, _ = crm_predict(peaked, tax, top_k=1, top_m=TOP_M)
    print(f"peaked probs (0.3 on one class): CRM vs argmax top-1 agreement {(pi[:, 0] == peaked.argmax(1)).mean():.3f}, "
          f"top-m vs exact {(pm[:, 0] == pi[:, 0]).mean():.3f}")
    print(f"memory: dense D {C * C * 8 / 1e6:.0f} MB float64; exact never holds more than N x C")
    print(f"ratio: {t_dense / t_exact:.2f}x  exact CRM vs dense baseline (build D + probs @ D)")
    print(f"ratio: {t_mul / t_exact:.2f}x  exact CRM vs dense probs @ D with D precomputed")
    print(f"ratio: {t_block / t_exact:.2f}x  exact CRM vs blocked lca_distance rows")
    print(f"ratio: {t_dense / t_topm:.2f}x  top-m CRM (m={TOP_M}) vs dense baseline")
    if err > 1e-8:
        sys.exit(f"exact CRM disagrees with the dense baseline by {err}")


if __name__ == "__main__":
    main()
