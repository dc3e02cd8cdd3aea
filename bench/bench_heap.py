"""What fixing glibc's mmap threshold (``semcat_kit._core.memory.bound_heap``) costs and saves.

Training steps of the default head (384 + 1280-d inputs, 5,595 classes, batch 1,024: the shape of
``bench_scale.py``'s training stage) run in one process, alternating rounds of ``--steps`` steps
under a fixed 1 MiB threshold (what ``bound_heap`` sets) and under a 32 MiB one (where glibc's
dynamic threshold ends up after the first large frees: blocks below it come from the heaps).
Alternating rounds in the same process puts both under the same machine load; medians are
reported. Memory: the private memory (RssAnon) each round leaves behind after its steps (each round
starts from trimmed heaps), i.e. what freed step temporaries the heaps keep.

Output::

    round <i> <mode> <ms/step> ms/step, rss after <MB> MB
    ratio: step time fixed_1MiB/heap_32MiB <x> (median of the per-round ratios; medians ...)
    ratio: rss after steps heap_32MiB/fixed_1MiB <x>

Usage: ``python bench/bench_heap.py [--rounds 6 --steps 10] [--write-doc]``. Linux/glibc only.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10, help="training steps per round")
    ap.add_argument("--classes", type=int, default=5595)
    ap.add_argument("--write-doc", action="store_true",
                    help="record the medians in docs/scale_measured.json and re-render docs/scale.md")
    args = ap.parse_args(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("bench_heap needs Linux (glibc mallopt)")
    import torch

    from semcat_kit import soft_labels
    from semcat_kit.learn.losses import combined_loss
    from semcat_kit.learn.model import FusionHead
    from semcat_kit.labels.similarity import Neighbors

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    torch.manual_seed(0)
    C, n = args.classes, 20_000
    model = FusionHead(384, 1280, C)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x1, x2, y = torch.randn(n, 384), torch.randn(n, 1280), torch.randint(0, C, (n,))
    rng = np.random.default_rng(0)                                        # 20 random neighbours a class
    idx = (np.arange(C)[:, None] + rng.choice(np.arange(1, C), size=20, replace=False)[None, :]) % C
    nb = Neighbors(idx, np.sort(rng.random((C, 20)))[:, ::-1].astype(np.float32))
    targets = soft_labels.build("topk", C, 0.1, neighbors=nb)
    ones = torch.ones(1024, dtype=torch.bool)

    def steps(k: int) -> float:
        t = time.perf_counter()
        for _ in range(k):
            i = torch.randint(0, n, (1024,))
            z = model(x1[i], x2[i], ones, ones)
            loss = combined_loss(z, y[i], targets, gamma=2.0, alpha=None, kl_weight=1.0)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t) / k

    steps(3)                                   # warm-up
    times = {"fixed_1MiB": [], "heap_32MiB": []}
    rss = {"fixed_1MiB": [], "heap_32MiB": []}
    print(f"bench_heap: {args.rounds} rounds x {args.steps} steps per mode, batch 1024, {C} classes, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    for r in range(args.rounds):
        for mode, thr in (("fixed_1MiB", 1 << 20), ("heap_32MiB", 32 << 20)):
            if libc.mallopt(-3, thr) != 1:                       # M_MMAP_THRESHOLD
                sys.exit("mallopt(M_MMAP_THRESHOLD) failed: not glibc?")
            libc.malloc_trim(0)                                  # each round starts from trimmed heaps
            s = steps(args.steps)
            times[mode].append(s)
            rss[mode].append(_anon_mb())
            print(f"round {r} {mode} {s * 1000:.0f} ms/step, rss after {rss[mode][-1]:.0f} MB", flush=True)
    a, b = np.median(times["fixed_1MiB"]), np.median(times["heap_32MiB"])
    # each round's two modes ran back to back under the same load: the median of the per-round
    # ratios is robust to the load changing between rounds (the ratio of medians is not)
    paired = float(np.median(np.array(times["fixed_1MiB"]) / np.array(times["heap_32MiB"])))
    print(f"ratio: step time fixed_1MiB/heap_32MiB {paired:.3f} (median of {args.rounds} per-round ratios; "
          f"medians {a * 1000:.0f} / {b * 1000:.0f} ms)")
    ra, rb = np.median(rss["fixed_1MiB"]), np.median(rss["heap_32MiB"])
    print(f"ratio: rss after steps heap_32MiB/fixed_1MiB {rb / ra:.3f} (medians {rb:.0f} / {ra:.0f} MB)")
    if args.write_doc:
        import os

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import scale_doc

        scale_doc.record("bench_heap", {"rounds": args.rounds, "steps": args.steps, "load": os.getloadavg()[0],
                                        "ms_fixed": a * 1000, "ms_heap": b * 1000, "paired_ratio": paired,
                                        "rss_fixed_mb": ra,
                                        "rss_heap_mb": rb})


if __name__ == "__main__":
    main()
