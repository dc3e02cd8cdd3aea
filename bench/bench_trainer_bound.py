"""The minibatch trainer against its GEMM bound, and under contention (issue 28, item 3).

Throughput: for each head shape -- the linear head of the data-aware defaults (``hidden=0,
proj_dim=0, input_norm=False``) and the MLP head (``proj_dim=256, hidden=512``) -- at C = 154 (the
tutorial) and C = 5,595 (the Google taxonomy), on synthetic embeddings of the tutorial's shapes
(text 384-d, image 1280-d, 2,075 items, batch 256, semantic soft labels k=20):

* ``trainer``: :func:`semcat_kit.learn.training.train` with ``solver="minibatch"`` (the whole
  loop: sampler, batch gathers, modality dropout, dropout, focal + KL loss, NaN checks, fused
  AdamW, warmup/cosine schedule, callbacks); items/s of its epochs (``history.seconds``, first
  epoch dropped as warm-up) and of the whole call;
* ``bound``: a bare loop over the same head's ``nn`` layers as they are (the projections and the
  MLP with its ``Dropout``; no masks, no modality dropout, no soft targets) on batches sliced (and,
  for the linear head, fused) before the clock starts, ``F.cross_entropy``, ``backward``, the same
  fused AdamW step: nothing but the layers and what they need;
* ``gemm``: the same loop without the ``Dropout`` layers (the GEMMs alone; informational).

``ratio: trainer / bound`` per shape (goal >= 0.70), then ``ratio: trainer / gemm``. Trainer and
bounds alternate, median of the repeats. Both run under the threads the library chooses (:func:`semcat_kit._core.threads.choose_threads`).

Contention: the same training run (linear head, C = 154, the tutorial's data-aware budget of
600 steps) and a full-batch L-BFGS fit of the same head to convergence (``solver="lbfgs"``, C = 10,
the default path on in-memory data), each idle and with ``--busy N`` CPU-bound background processes
(default 4: busy loops in subprocesses, killed at the end), median of ``--repeats``;
``ratio: loaded / idle`` for each (goal <= 4).

Every figure is printed with the load average when it was taken: the machine's other jobs move
them; run it on an idle machine for numbers to quote.

    python bench/bench_trainer_bound.py            # ~3 min idle
    python bench/bench_trainer_bound.py --quick    # C=154 only, fewer repeats, shorter runs
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semcat_kit._core import threads as _threads  # noqa: E402  (sets the OpenMP wait policy before torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import semcat_kit as sk  # noqa: E402
from semcat_kit.encode.embeddings import Embeddings  # noqa: E402
from semcat_kit.learn.training import TrainConfig, train  # noqa: E402

DT, DI, N, BATCH, K = 384, 1280, 2_075, 256, 20
HEADS = {"linear": dict(hidden=0, proj_dim=0, input_norm=False),
         "mlp": dict(proj_dim=256, hidden=512)}



TITLE = "The minibatch trainer: its GEMM bound; it and the full-batch solver under contention"

def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def synthetic(C: int, n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    tax = sk.Taxonomy.from_paths([f"Top{i // 40} > Leaf{i}" for i in range(C)])
    y = rng.integers(0, C, n)
    ct = rng.normal(size=(C, DT)).astype(np.float32)
    ci = rng.normal(size=(C, DI)).astype(np.float32)
    text = ct[y] + rng.normal(size=(n, DT)).astype(np.float32)
    image = ci[y] + rng.normal(size=(n, DI)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    imask = rng.random(n) >= 0.1
    image[~imask] = 0
    emb = Embeddings(np.arange(n).astype(str), text, image, np.ones(n, bool), imask)
    nb = sk.similarity.label_neighbors(rng.normal(size=(C, 64)).astype(np.float32), k=K, progress=False)
    return emb, y, tax, nb


def config(head: str, epochs: int, **kw) -> TrainConfig:
    return TrainConfig(**HEADS[head], smoothing="semantic", k=K, focal_gamma=0.0, epochs=epochs, batch_size=BATCH,
                       early_stopping=None, solver="minibatch", device="cpu", seed=0, **kw)


def run_trainer(data, head: str, epochs: int) -> tuple[float, float]:
    """(items/s of the epochs after the first, items/s of the whole call)."""
    emb, y, tax, nb = data
    t0 = time.perf_counter()
    run = train(emb, y, taxonomy=tax, neighbors=nb, config=config(head, epochs), progress=False)
    wall = time.perf_counter() - t0
    sec = run.history["seconds"].to_numpy()
    return len(y) / float(np.median(sec[1:])), len(y) * epochs / wall


def run_bound(data, head: str, epochs: int, dropout: bool = True) -> float:
    """items/s of a bare loop over the same layers (no masks, batches pre-sliced; ``dropout``: keep
    the head's Dropout layers)."""
    emb, y, tax, nb = data
    from semcat_kit.learn.model import FusionHead

    torch.manual_seed(0)
    m = FusionHead(DT, DI, tax.n_classes, **HEADS[head]).train()
    out = [l for l in m.mlp if dropout or not isinstance(l, torch.nn.Dropout)]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-2, fused=True)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    text, image, yt = torch.from_numpy(emb.text), torch.from_numpy(emb.image), torch.from_numpy(y)
    flags = torch.ones(BATCH, 2)
    batches = []
    for a in range(0, len(y), BATCH):
        i = perm[a:a + BATCH]
        if head == "linear":      # the layer's input, fused before the clock
            batches.append((torch.cat([text[i], image[i], flags[:len(i)]], 1), yt[i]))
        else:
            batches.append((text[i].contiguous(), image[i].contiguous(), yt[i]))

    def step(b):
        if head == "linear":
            h, yb = b
        else:
            t, v, yb = b
            h = torch.cat([m.text_proj(t), m.image_proj(v), flags[:len(t)]], 1)
        for layer in out:
            h = layer(h)
        loss = F.cross_entropy(h, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in batches:        # warm-up epoch
        step(b)
    t0 = time.perf_counter()
    for _ in range(epochs - 1):
        for b in batches:
            step(b)
    return len(y) * (epochs - 1) / (time.perf_counter() - t0)


def throughput(Cs, epochs: int, repeats: int, threads: int) -> None:
    print(f"\n== trainer vs GEMM bound: N={N}, batch {BATCH}, text {DT} + image {DI}, {epochs} epochs "
          f"(first dropped), median of {repeats}, {threads} thread(s) for both; {load()}", flush=True)
    old = os.environ.get(_threads.ENV)
    os.environ[_threads.ENV] = str(threads)       # the trainer and the bound on the same threads
    try:
        with _threads.torch_threads(threads):
            _throughput(Cs, epochs, repeats)
    finally:
        if old is None:
            os.environ.pop(_threads.ENV)
        else:
            os.environ[_threads.ENV] = old


def _throughput(Cs, epochs: int, repeats: int) -> None:
    for C in Cs:
        data = synthetic(C)
        for head in HEADS:
            tr, whole, bd, gm = [], [], [], []
            for _ in range(repeats):
                a, w = run_trainer(data, head, epochs)
                tr.append(a)
                whole.append(w)
                bd.append(run_bound(data, head, epochs))
                gm.append(run_bound(data, head, epochs, dropout=False))
            t, b, g = float(np.median(tr)), float(np.median(bd)), float(np.median(gm))
            print(f"  C={C:>5} {head:>6}: trainer {t:>8,.0f} items/s (whole call {np.median(whole):,.0f}), "
                  f"bound {b:>8,.0f}, gemm {g:>8,.0f} items/s  [raw trainer {[round(x) for x in tr]}, "
                  f"bound {[round(x) for x in bd]}, gemm {[round(x) for x in gm]}]  {load()}")
            print(f"ratio: {t / b:.2f}  (trainer / bound of the head's layers, {head} head, C={C}; goal >= 0.70)")
            print(f"ratio: {t / g:.2f}  (trainer / GEMMs without dropout, {head} head, C={C}; informational)",
                  flush=True)


BUSY = "while True: pass"


def timed_run(data, steps: int) -> float:
    emb, y, tax, nb = data
    n_ep = -(-steps // -(-len(y) // BATCH))       # ceil(steps / steps per epoch)
    t0 = time.perf_counter()
    train(emb, y, taxonomy=tax, neighbors=nb, config=config("linear", n_ep), progress=False)
    return time.perf_counter() - t0


def timed_lbfgs(data) -> float:
    """One full-batch fit of the default (linear) head to convergence at C = 10 (the default path)."""
    emb, y, tax, nb = data
    cfg = TrainConfig(**HEADS["linear"], smoothing="semantic", k=K, focal_gamma=0.0, solver="lbfgs", C=10.0,
                      device="cpu", seed=0)
    t0 = time.perf_counter()
    run = train(emb, y, taxonomy=tax, neighbors=nb, config=cfg, progress=False)
    assert run.solver["method"] == "lbfgs"
    return time.perf_counter() - t0


def contention(busy: int, steps: int, repeats: int) -> None:
    data = synthetic(154)
    runs = {"minibatch": lambda: timed_run(data, steps), "lbfgs": lambda: timed_lbfgs(data)}
    print(f"\n== contention: linear head, C=154: the minibatch trainer ({steps} steps) and a full-batch L-BFGS "
          f"fit (C=10), idle vs {busy} busy processes (threads chosen: {_threads.describe()})", flush=True)
    timed_run(data, 20)      # warm-up (imports, first allocations)
    idle = {k: [f() for _ in range(repeats)] for k, f in runs.items()}
    for k, v in idle.items():
        print(f"  idle   {k:9s}: {np.median(v):.2f} s  raw {[round(x, 2) for x in v]}  {load()}", flush=True)
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        time.sleep(1.0)
        loaded = {k: [f() for _ in range(repeats)] for k, f in runs.items()}
        for k, v in loaded.items():
            print(f"  loaded {k:9s}: {np.median(v):.2f} s  raw {[round(x, 2) for x in v]}  {load()}  "
                  f"(threads then: {_threads.describe()})", flush=True)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    for k in runs:
        what = "the minibatch trainer" if k == "minibatch" else "a full-batch L-BFGS fit"
        print(f"ratio: {np.median(loaded[k]) / np.median(idle[k]):.2f}  (loaded / idle time of {what} with {busy} "
              "busy processes; goal <= 4)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="C=154 only, 2 repeats, shorter runs")
    ap.add_argument("--busy", type=int, default=4, help="busy background processes in the contention run")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the throughput section (default: what the library chooses now)")
    ap.add_argument("--skip", choices=["throughput", "contention"], action="append", default=[])
    ap.add_argument("--record", metavar="MD", help="also write what is printed to this markdown file "
                    "(e.g. docs/bench/trainer_bound.md), with the command, the machine and the load average")
    a = ap.parse_args(argv)
    reps = a.repeats or (2 if a.quick else 3)
    from _record import recording

    with recording(a.record, TITLE):
        print(f"torch {torch.__version__}; {_threads.describe()}; {load()}")
        t0 = time.perf_counter()
        if "throughput" not in a.skip:
            throughput([154] if a.quick else [154, 5595], epochs=3 if a.quick else 4, repeats=reps,
                       threads=a.threads or _threads.choose_threads())
        if "contention" not in a.skip:
            contention(a.busy, steps=120 if a.quick else 300, repeats=reps)
        print(f"total {time.perf_counter() - t0:.0f} s  {load()}")


if __name__ == "__main__":
    main()
