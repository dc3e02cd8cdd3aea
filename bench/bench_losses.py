"""Soft-label KL loss: sparse gather (semcat_kit.learn.losses.soft_kl) vs a dense baseline.

Dense baseline: materialise the (B, C) target rows of the batch and use
F.kl_div(F.log_softmax(logits), target, reduction="batchmean"). Both do forward + backward on the
same logits; C = 5,595 (Google taxonomy size) and C = 50,000, batch 512, k = 20 semantic targets.
Prints medians over repeats, `ratio: X.XXx` (dense time / sparse time) and the max difference.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from semcat_kit import soft_labels as sl
from semcat_kit.learn.losses import soft_kl
from semcat_kit.labels.similarity import Neighbors

B, K, REPEATS = 512, 20, 7


def random_neighbors(C: int, k: int, seed: int = 0) -> Neighbors:
    rng = np.random.default_rng(seed)
    idx = (np.arange(C)[:, None] + rng.integers(1, C, size=(C, k))) % C  # never self
    # distinct per row: resample duplicates by shifting (rare at these sizes)
    idx = np.sort(idx, 1)
    dup = np.zeros_like(idx, bool)
    dup[:, 1:] = idx[:, 1:] == idx[:, :-1]
    idx = np.where(dup, -1, idx)
    sims = np.sort(rng.uniform(0.2, 0.9, size=(C, k)).astype(np.float32), 1)[:, ::-1]
    order = np.argsort(idx < 0, axis=1, kind="stable")  # padding to the end
    idx = np.take_along_axis(idx, order, 1)
    sims = np.where(idx >= 0, sims, 0)
    return Neighbors(idx, sims)


def dense_kl(logits, y, targets: sl.SoftTargets):
    C = targets.n_classes
    rows = torch.from_numpy(targets.indices)[y]
    w = torch.from_numpy(targets.weights)[y]
    t = torch.full((len(y), C), targets.floor / C)
    t.scatter_add_(1, rows.clamp_min(0), w)
    return F.kl_div(F.log_softmax(logits.float(), 1), t, reduction="batchmean")


def timeit(fn, z):
    times = []
    for _ in range(REPEATS):
        z.grad = None
        t0 = time.perf_counter()
        loss = fn()
        loss.backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), loss.item()


def main():
    torch.manual_seed(0)
    for C in (5_595, 50_000):
        for kind, alpha in (("semantic", 0.2), ("uniform", 0.1)):
            nb = random_neighbors(C, K)
            t0 = time.perf_counter()
            targets = sl.build(kind, C, alpha, neighbors=nb, temperature=0.1)
            t_build = time.perf_counter() - t0
            z = (torch.randn(B, C) * 3).requires_grad_(True)
            y = torch.randint(0, C, (B,))
            soft_kl(z, y, targets)  # warm-up (caches the torch tables)
            t_sparse, v_sparse = timeit(lambda: soft_kl(z, y, targets), z)
            g_sparse = z.grad.clone()
            t_dense, v_dense = timeit(lambda: dense_kl(z, y, targets), z)
            gdiff = (z.grad - g_sparse).abs().max().item()
            print(f"C={C} B={B} kind={kind} K={targets.k}: build {t_build * 1e3:.1f} ms; "
                  f"fwd+bwd sparse {t_sparse * 1e3:.1f} ms, dense {t_dense * 1e3:.1f} ms "
                  f"(median of {REPEATS}); |loss diff| {abs(v_sparse - v_dense):.2e}, max |grad diff| {gdiff:.2e}")
            print(f"ratio: {t_dense / t_sparse:.2f}x  (soft_kl C={C} {kind}: dense / sparse time)")


if __name__ == "__main__":
    main()
