"""Benchmark: LCA distance on the Google Product Taxonomy (5,595 classes, depth 1-7).

Project: ``Taxonomy.lca_distance(i, j)`` vectorised over 1,000,000 random class pairs.
Baselines (same run, same pairs): a straightforward pure-Python ancestor walk per pair (parent
pointers: lift the deeper node, then both until they meet), and networkx
``lowest_common_ancestor`` per pair, each on a sample of the pairs and extrapolated per pair.
Prints medians of repeats, pairs/s of each, and ``ratio:`` lines (project speed / baseline speed).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semcat_kit import Taxonomy  # noqa: E402

DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))
GOOGLE = DATA / "google-product-taxonomy" / "taxonomy-with-ids.en-US.txt"
N_PAIRS = 1_000_000
N_WALK = 50_000
N_NX = 500
REPEATS = 5


def walk_distance(parent: list[int], depth: list[int], a: int, b: int) -> int:
    """Baseline: d = max(depth) - depth(lca) with a per-pair parent-pointer walk."""
    da, db = depth[a], depth[b]
    top = max(da, db)
    while da > db:
        a, da = parent[a], da - 1
    while db > da:
        b, db = parent[b], db - 1
    while a != b:
        a, b, da = parent[a], parent[b], da - 1
    return top - da


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    if not GOOGLE.exists():
        sys.exit(f"Google taxonomy not found at {GOOGLE} (set SEMCAT_SHARED_DATA)")
    t0 = time.perf_counter()
    tax = Taxonomy.from_google_taxonomy(GOOGLE)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    i = rng.integers(0, tax.n_classes, N_PAIRS)
    j = rng.integers(0, tax.n_classes, N_PAIRS)

    proj_s, d = timed(lambda: tax.lca_distance(i, j), REPEATS)

    # baseline 1: pure-Python walk over class-level parent pointers
    node_parent = tax.node_parent.tolist()
    node_depth = tax.node_depth.tolist()
    cn = tax.class_nodes.tolist()
    si, sj = [cn[x] for x in i[:N_WALK].tolist()], [cn[x] for x in j[:N_WALK].tolist()]
    walk_s, ref = timed(lambda: [walk_distance(node_parent, node_depth, a, b) for a, b in zip(si, sj)], 3)
    assert ref == d[:N_WALK].tolist(), "baseline walk disagrees with Taxonomy.lca_distance"

    # baseline 2: networkx lowest_common_ancestor per pair
    import networkx as nx

    g = tax.to_networkx()
    dep = nx.get_node_attributes(g, "depth")
    pairs = [(tax.classes[a], tax.classes[b]) for a, b in zip(i[:N_NX].tolist(), j[:N_NX].tolist())]

    def nx_run():
        return [max(dep[a], dep[b]) - dep[nx.lowest_common_ancestor(g, a, b)] for a, b in pairs]

    nx_s, ref_nx = timed(nx_run, 1)
    assert ref_nx == d[:N_NX].tolist(), "networkx disagrees with Taxonomy.lca_distance"

    proj_rate = N_PAIRS / proj_s
    walk_rate = N_WALK / walk_s
    nx_rate = N_NX / nx_s
    print(f"taxonomy: {tax!r}, loaded in {load_s:.3f} s")
    print(f"project  Taxonomy.lca_distance: {N_PAIRS:,} pairs in {proj_s:.4f} s (median of {REPEATS}) "
          f"= {proj_rate:,.0f} pairs/s")
    print(f"baseline python ancestor walk : {N_WALK:,} pairs in {walk_s:.4f} s (median of 3) = {walk_rate:,.0f} "
          f"pairs/s -> {N_PAIRS / walk_rate:.2f} s extrapolated for {N_PAIRS:,}")
    print(f"baseline networkx LCA per pair: {N_NX:,} pairs in {nx_s:.4f} s (1 run) = {nx_rate:,.0f} pairs/s "
          f"-> {N_PAIRS / nx_rate:.1f} s extrapolated for {N_PAIRS:,}")
    print(f"ratio: {proj_rate / walk_rate:.2f}x  (lca_distance vs python ancestor walk, pairs/s)")
    print(f"ratio: {proj_rate / nx_rate:.2f}x  (lca_distance vs networkx lowest_common_ancestor, pairs/s)")
    if proj_s >= 1.0:
        sys.exit(f"FAIL: 1M lca_distance pairs took {proj_s:.2f} s (must be well under 1 s)")


if __name__ == "__main__":
    main()
