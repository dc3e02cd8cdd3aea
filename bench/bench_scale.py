"""Scale benchmark: a synthetic catalog shaped like a real one, through the stages that must stay
within bounded memory at millions of products.

Data: N products with a 384-d text and a 1280-d image embedding (float32, L2-normalised; what
minilm and efficientnet-lite0 give), over the 5,595 classes of the Google Product Taxonomy with a
long-tailed (Zipf, s=1.1) class distribution; 2% of products have no image, 1% no title. The
vectors are class means plus noise, generated block by block from (seed, block index), so any
stage can stream them without holding N x 1664 floats. Head: a randomly initialised
``FusionHead(384, 1280, 5595)`` (default widths), exported and reloaded with ``export_head`` /
``load_head`` as a user's head would be.

Stages (``STAGES``; each is a function ``stage(ctx) -> dict`` registered with ``@stage(name)``, so
other stages -- store build, one training epoch, validation -- are added the same way):

* ``encode_text_store``: ``encode_into_store`` (the ``semcat encode`` path) over N synthetic titles
  (1% missing) with a tiny stand-in text encoder, into a fresh store, reading the catalog from a
  Parquet file (written block by block before the stages) in chunks: the streaming encode's own
  memory.
* ``store_build``: the catalog's 384-d and 1280-d vectors written block by block into the
  embedding store (``VectorStore``, memory-mapped Arrow shards, tiered merges).
* ``store_view``: the whole catalog as an ``Embeddings`` view on the store (every product's keys
  located, ``keep_index=False``): item ids, masks and where each vector is -- the per-item
  bookkeeping the later stages read. Built once; the stages below start with it held, so each
  prints ``stage_rss_mb`` (its peak minus the RssAnon it started with: what the stage adds).
* ``train_epoch_store`` / ``train_epoch_in_memory``: one epoch of ``sk.train`` (batch 1,024, the
  default head) on 90% of the products plus streaming validation on the other 10%, from
  ``Embeddings`` whose vectors are ``StoreRows`` views on the store (positions only; rows read per
  batch) vs from arrays in memory (where they fit). ``--train-steps K`` times only the first K
  batches of the epoch (the full table, sampler and validation are still built and run) and
  extrapolates the epoch, printed as EXTRAPOLATED.
* ``predict_chunked``: ``Predictor.predict_embeddings_iter`` (top-5, chunks of ``--chunk-size``)
  over the store view, written to Parquet with ``write_predictions`` -- the ``semcat predict``
  path minus the encoders.
* ``evaluate_streaming`` / ``evaluate_in_memory``: validation metrics (top-k, severity, hdist@k,
  nbrs@k, level accuracy, macro-F1, ECE) of the head's probabilities on the validation split (the
  last ~10%) with :class:`semcat_kit.judge.streaming.StreamingEvaluator` block by block, vs
  ``metrics.evaluate`` on the dense (N_val, C) matrix (where it fits); the two Series are checked
  equal (1e-9). The head forward pass is inside both timings.
* ``predict_in_memory``: the path before chunking: one (N, 1664) embedding table, one dense
  (N, 5595) probability matrix (``head.predict_proba``), ``topk`` over it, one DataFrame. Run only
  when its estimated size fits ``--max-dense-gb``; its top-5 (ids, classes, probabilities) is
  checked equal to the chunked output.

Memory is sampled every 10 ms in a background thread from /proc/self/status: ``RssAnon`` (private,
anonymous memory: what cannot be dropped) is the ``peak_rss_mb`` figure; ``RssFile`` (file-backed
pages, e.g. a memory-mapped store, which the OS can drop) is reported apart as ``peak_rss_file_mb``.

Output lines (grep-able)::

    peak_rss_mb: <stage> <MB>          peak RssAnon during the stage
    stage_rss_mb: <stage> <MB>         that peak minus RssAnon at the stage's start (what it adds)
    peak_rss_file_mb: <stage> <MB>     peak RssFile during the stage
    throughput: <stage> <items/s> items/s (<seconds> s)
    ratio: <what> <value>

Usage: ``python bench/bench_scale.py --n 100000`` (default N is small so ``bench/run_all.py``
finishes quickly); ``--write-doc`` records the figures in ``docs/scale_measured.json`` and
re-renders ``docs/scale.md`` (see ``bench/scale_doc.py``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))
TAX_FILE = DATA / "google-product-taxonomy" / "taxonomy-with-ids.en-US.txt"
TEXT_DIM, IMAGE_DIM = 384, 1280
GEN_BLOCK = 8192          # rows generated at a time (deterministic per block)
ZIPF_S = 1.1


# ---------------------------------------------------------------------------------- memory
def _status_kb(fields=("RssAnon", "RssFile")) -> dict:
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in fields:
                out[key] = int(line.split()[1])
    return out


class MemorySampler:
    """Peak RssAnon / RssFile (MB) of this process, sampled in a background thread."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.peak = _status_kb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            now = _status_kb()
            for k, v in now.items():
                self.peak[k] = max(self.peak[k], v)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        now = _status_kb()
        for k, v in now.items():
            self.peak[k] = max(self.peak[k], v)

    @property
    def anon_mb(self) -> float:
        return self.peak["RssAnon"] / 1024

    @property
    def file_mb(self) -> float:
        return self.peak["RssFile"] / 1024


# ---------------------------------------------------------------------------------- data
class SyntheticCatalog:
    """N products shaped like a real catalog, generated block by block (never all at once).

    ``block(i)`` is deterministic in (seed, i): ``labels`` Zipf-distributed over the classes (a
    random permutation of ranks, so the head classes are spread over the tree), text/image vectors
    ``normalise(mean[label] + noise)``, a few products without image or title.
    """

    def __init__(self, n: int, taxonomy, seed: int = 0):
        self.n, self.taxonomy, self.seed = int(n), taxonomy, seed
        C = taxonomy.n_classes
        rng = np.random.default_rng(seed)
        w = 1.0 / np.arange(1, C + 1) ** ZIPF_S
        self.class_p = w / w.sum()
        self.perm = rng.permutation(C)
        self.text_means = rng.standard_normal((C, TEXT_DIM), dtype=np.float32)
        self.image_means = rng.standard_normal((C, IMAGE_DIM), dtype=np.float32)

    @property
    def n_blocks(self) -> int:
        return -(-self.n // GEN_BLOCK)

    def block(self, i: int):
        """``(item_ids, labels, Embeddings)`` of rows ``i*GEN_BLOCK ..``."""
        from semcat_kit.encode.embeddings import Embeddings

        a, b = i * GEN_BLOCK, min(self.n, (i + 1) * GEN_BLOCK)
        m = b - a
        rng = np.random.default_rng([self.seed, i])
        y = self.perm[rng.choice(len(self.class_p), size=m, p=self.class_p)]
        text = self.text_means[y] + 1.5 * rng.standard_normal((m, TEXT_DIM), dtype=np.float32)
        image = self.image_means[y] + 2.0 * rng.standard_normal((m, IMAGE_DIM), dtype=np.float32)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        image /= np.linalg.norm(image, axis=1, keepdims=True)
        image_mask = rng.random(m) >= 0.02
        text_mask = (rng.random(m) >= 0.01) | ~image_mask         # every product has something
        text[~text_mask] = 0
        image[~image_mask] = 0
        ids = np.char.add("p", np.arange(a, b).astype(str))
        return ids, y, Embeddings(ids, text, image, text_mask, image_mask)

    def embeddings(self):
        """Embeddings of each block, in order."""
        for i in range(self.n_blocks):
            yield self.block(i)[2]


# ---------------------------------------------------------------------------------- stages
@dataclass
class Context:
    args: argparse.Namespace
    taxonomy: object
    catalog: SyntheticCatalog
    tmp: Path
    predictor: object = None
    catalog_file: Path | None = None
    view: object = None             # the catalog's Embeddings view on the store (built once, by store_view)
    results: dict = field(default_factory=dict)     # stage -> {"seconds", "items", "rss_anon_mb", ...}


STAGES: list[tuple[str, object]] = []
#: the order stages run in (the store is built before the stages that read it)
#: (the in-memory comparisons last: with ``--write-doc`` every finished stage is recorded at once, so a
#: long in-memory run cut short still leaves the streaming figures of this size)
ORDER = ["encode_text_store", "store_build", "store_view", "train_epoch_store", "evaluate_streaming", "predict_chunked",
         "evaluate_in_memory", "train_epoch_in_memory", "predict_in_memory"]


def stage(name: str):
    """Register ``fn(ctx) -> dict`` (``items`` processed, optional ``skip`` reason) as a stage."""
    def deco(fn):
        STAGES.append((name, fn))
        return fn
    return deco


def _predictor(ctx: Context):
    if ctx.predictor is None:
        import torch

        from semcat_kit import Predictor, export_head
        from semcat_kit.ship.export import load_head
        from semcat_kit.learn.model import FusionHead

        torch.manual_seed(0)
        model = FusionHead(TEXT_DIM, IMAGE_DIM, ctx.taxonomy.n_classes).eval()
        run = SimpleNamespace(model=model, taxonomy=ctx.taxonomy, encoder_meta={}, config=None)
        d = export_head(run, ctx.tmp / "head", onnx=False, pt2=False)
        ctx.predictor = Predictor(load_head(d, device="cpu"))
    return ctx.predictor


@stage("predict_chunked")
def predict_chunked(ctx: Context) -> dict:
    from semcat_kit.ship.predictor import write_predictions

    pred = _predictor(ctx)
    out = ctx.tmp / "pred_chunked.parquet"
    # from the store view when the store was built (what `semcat predict` reads at scale), else the generator
    src = _store_view(ctx) if _store_built(ctx) else ctx.catalog.embeddings()
    frames = pred.predict_embeddings_iter(src, top_k=5, chunk_size=ctx.args.chunk_size, progress=False)
    n = write_predictions(frames, out)
    return {"items": n, "output": out}


def dense_gb(n: int, C: int) -> float:
    """Estimated memory of the in-memory path: embeddings + logits + probabilities, float32."""
    return n * (TEXT_DIM + IMAGE_DIM + 2 * C) * 4 / 1e9


@stage("predict_in_memory")
def predict_in_memory(ctx: Context) -> dict:
    """The path before chunking: all embeddings, ``head.predict_proba`` -> one dense (N, C) matrix,
    ``topk`` over it, one DataFrame written at once."""
    import pandas as pd

    from semcat_kit.judge.decoding import topk
    from semcat_kit.encode.embeddings import Embeddings

    need = dense_gb(ctx.catalog.n, ctx.taxonomy.n_classes)
    if need > ctx.args.max_dense_gb:
        return {"skip": f"needs ~{need:.1f} GB > --max-dense-gb {ctx.args.max_dense_gb}"}
    pred = _predictor(ctx)
    parts = list(ctx.catalog.embeddings())
    emb = Embeddings(np.concatenate([e.item_ids for e in parts]), np.concatenate([e.text for e in parts]),
                     np.concatenate([e.image for e in parts]), np.concatenate([e.text_mask for e in parts]),
                     np.concatenate([e.image_mask for e in parts]))
    del parts
    probs = pred.head.predict_proba(emb)                       # dense (N, C) float32
    idx = topk(probs, 5)
    p = np.take_along_axis(probs, idx, axis=1).astype(np.float64)
    del probs
    classes, names = np.asarray(pred.classes, dtype=object), np.asarray(pred.names, dtype=object)
    out = {"item_id": emb.item_ids}
    out.update({f"pred_{j + 1}": classes[idx[:, j]] for j in range(5)})
    out.update({f"name_{j + 1}": names[idx[:, j]] for j in range(5)})
    out.update({f"prob_{j + 1}": p[:, j] for j in range(5)})
    df = pd.DataFrame(out)
    path = ctx.tmp / "pred_in_memory.parquet"
    df.to_parquet(path, index=False)
    return {"items": len(df), "output": path}


def _neighbors(ctx: Context, k: int = 20) -> np.ndarray:
    """A (C, k) neighbour table: each class's nearest classes in the tree (siblings first), -1 padded."""
    if getattr(ctx, "_nb", None) is None:
        tax = ctx.taxonomy
        C = tax.n_classes
        rng = np.random.default_rng(1)
        parent = tax.level_index(np.arange(C), np.maximum(tax.depth(np.arange(C)) - 1, 1))
        order = np.argsort(parent, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(parent[order])) + 1)
        nb = np.full((C, k), -1, dtype=np.int64)
        for g in groups:
            for c in g:
                sib = g[g != c][:k]
                nb[c, :len(sib)] = sib
                if len(sib) < k // 2:                       # a few far classes after the siblings
                    nb[c, len(sib):k // 2] = rng.choice(C, size=k // 2 - len(sib), replace=False)
        ctx._nb = nb
    return ctx._nb


def _eval_blocks(ctx: Context) -> range:
    """The generated blocks of the validation split (the last ~10% of the rows)."""
    return range(_split(ctx.catalog.n) // GEN_BLOCK, ctx.catalog.n_blocks)


def _eval_n(ctx: Context) -> int:
    return sum(min(ctx.catalog.n, (i + 1) * GEN_BLOCK) - i * GEN_BLOCK for i in _eval_blocks(ctx))


def _probs_blocks(ctx: Context):
    """``(probs (block, C) float32 tensor, labels)`` of each generated block, scored by the head."""
    import torch

    pred = _predictor(ctx)
    for i in _eval_blocks(ctx):
        _, y, emb = ctx.catalog.block(i)
        yield torch.from_numpy(pred.head.predict_proba(emb)), y


@stage("evaluate_streaming")
def evaluate_streaming(ctx: Context) -> dict:
    """Validation metrics with :class:`StreamingEvaluator`: (block, C) probabilities at a time."""
    from semcat_kit.judge.streaming import StreamingEvaluator

    ev = StreamingEvaluator(ctx.taxonomy, neighbors=_neighbors(ctx), ks=(1, 5, 20))
    for p, y in _probs_blocks(ctx):
        ev.update(p, y)
    return {"items": ev.n, "metrics": ev.compute()}


@stage("evaluate_in_memory")
def evaluate_in_memory(ctx: Context) -> dict:
    """The same metrics with :func:`semcat_kit.judge.metrics.evaluate` on the dense (N, C) matrix."""
    from semcat_kit.judge.metrics import evaluate

    m = _eval_n(ctx)
    need = m * ctx.taxonomy.n_classes * 4 * 2 / 1e9
    if need > ctx.args.max_dense_gb:
        return {"skip": f"needs ~{need:.1f} GB > --max-dense-gb {ctx.args.max_dense_gb}"}
    probs = np.empty((m, ctx.taxonomy.n_classes), dtype=np.float32)
    ys, a = [], 0
    for p, y in _probs_blocks(ctx):
        probs[a:a + len(y)] = p.numpy()
        ys.append(y)
        a += len(y)
    return {"items": a, "metrics": evaluate(probs, np.concatenate(ys), ctx.taxonomy, neighbors=_neighbors(ctx))}


# ---------------------------------------------------------------------------------- store + training
_TRAIN_BATCH = 1024


def _store_dir(ctx: Context) -> Path:
    return ctx.tmp / "store"


def _stores(ctx: Context):
    from semcat_kit.encode.store import VectorStore

    d = _store_dir(ctx)
    return (VectorStore(d / "text", TEXT_DIM, dtype=ctx.args.store_dtype),
            VectorStore(d / "image", IMAGE_DIM, dtype=ctx.args.store_dtype))


def _item_keys(ids) -> np.ndarray:
    from semcat_kit.encode.store import content_keys

    return content_keys([str(i) for i in ids])      # the bench's content key: the item id (one block at a time)


@stage("store_build")
def store_build(ctx: Context) -> dict:
    """The catalog's vectors written block by block into the embedding store (``VectorStore``:
    memory-mapped Arrow shards, one per modality, tiered merges -- what ``encode_catalog`` writes),
    plus per-item files (``ids.npy``, ``keys.npy``, ``masks.npy``, ``labels.npy``) written block by
    block into memory-mapped ``.npy`` files; never all in memory."""
    n = ctx.catalog.n
    ts, is_ = _stores(ctx)
    d = ctx.tmp
    width = len(f"p{max(n - 1, 0)}")
    labels = np.lib.format.open_memmap(d / "labels.npy", mode="w+", dtype=np.int64, shape=(n,))
    ids = np.lib.format.open_memmap(d / "ids.npy", mode="w+", dtype=f"<U{width}", shape=(n,))
    keys_all = np.lib.format.open_memmap(d / "keys.npy", mode="w+", dtype=np.uint8, shape=(n, 16))
    masks = np.lib.format.open_memmap(d / "masks.npy", mode="w+", dtype=bool, shape=(n, 2))
    a = 0
    for i in range(ctx.catalog.n_blocks):
        bid, y, emb = ctx.catalog.block(i)
        b = a + len(y)
        keys = _item_keys(bid)
        ts.put(keys[emb.text_mask], emb.text[emb.text_mask])
        is_.put(keys[emb.image_mask], emb.image[emb.image_mask])
        ts.flush(), is_.flush()
        labels[a:b], ids[a:b], keys_all[a:b] = y, bid, keys
        masks[a:b, 0], masks[a:b, 1] = emb.text_mask, emb.image_mask
        a = b
    for m in (labels, ids, keys_all, masks):
        m.flush()
    del labels, ids, keys_all, masks
    shards = len(ts.shard_files) + len(is_.shard_files)
    size = sum(f.stat().st_size for f in _store_dir(ctx).rglob("*.arrow"))
    return {"items": n, "shards": shards, "store_gb": size / 1e9}


def _store_built(ctx: Context) -> bool:
    return (ctx.tmp / "keys.npy").exists()


def _store_view(ctx: Context):
    """The whole catalog as an ``Embeddings`` whose vectors are ``StoreRows`` views on the store
    (built once per run, by the ``store_view`` stage when it runs, and kept in ``ctx.view``).

    Private per item: the ids (``<U`` array, 4 bytes a character), the two masks, and per modality
    where each vector is (2 + 4 bytes); the keys are read from their memory-mapped file."""
    from semcat_kit.encode.embeddings import Embeddings

    if ctx.view is not None:
        return ctx.view
    d = ctx.tmp
    ids = np.load(d / "ids.npy")
    masks = np.load(d / "masks.npy")
    keys = np.load(d / "keys.npy", mmap_mode="r")
    tm, im = masks[:, 0].copy(), masks[:, 1].copy()
    del masks
    ts, is_ = _stores(ctx)
    text = ts.locate(keys, valid=tm, keep_index=False)
    image = is_.locate(keys, valid=im, keep_index=False)
    assert (text.found == tm).all() and (image.found == im).all()
    ctx.view = Embeddings(ids, text, image, tm, im)
    return ctx.view


@stage("store_view")
def store_view(ctx: Context) -> dict:
    """The catalog as an ``Embeddings`` view on the store (what ``encode_catalog`` returns at scale):
    every product's keys located in the store (``VectorStore.locate(keep_index=False)``: shard by
    shard, one key index at a time). The stages after it read this view: their own memory is
    what they add to it (``stage_rss_mb``)."""
    if not _store_built(ctx):
        return {"skip": "the store is not built (run store_build)"}
    ctx.view = None
    return {"items": len(_store_view(ctx))}


def _step_limit(steps: int):
    """A trainer callback: run only the first ``steps`` batches of the epoch (the full epoch's
    batches are still drawn from the whole table), timing them to extrapolate the full epoch."""
    from semcat_kit.learn.trainer import Callback

    class StepLimit(Callback):
        order = 0

        def __init__(self):
            self.steps, self.total, self.seconds, self.t0 = int(steps), None, None, None

        def on_train_begin(self, trainer):
            full = trainer.sampler.epoch

            def limited():
                batches = full()
                self.total = len(batches)
                return batches[:self.steps]
            trainer.sampler.epoch = limited

        def on_epoch_begin(self, trainer):
            self.t0 = time.perf_counter()

        def on_step_end(self, trainer):
            self.seconds = time.perf_counter() - self.t0

    return StepLimit()


def _train_one_epoch(ctx: Context, emb, y, val) -> dict:
    import semcat_kit as sk

    steps = ctx.args.train_steps
    limit = _step_limit(steps) if steps else None
    cbs = [limit] if limit is not None else []
    cfg = sk.TrainConfig(epochs=1, batch_size=_TRAIN_BATCH, device="cpu", early_stopping=None, warmup=0.0)
    t = time.perf_counter()
    run = sk.train(emb, y, taxonomy=ctx.taxonomy, config=cfg, val=val, progress=False,
                   allow_unseen_val_classes=True, callbacks=cbs)
    h = run.history.iloc[-1]
    out = {"items": len(y), "val_top1": float(h.get("val_top1", float("nan"))),
           "val_seconds": float(h.get("val_seconds", float("nan"))), "train_seconds": time.perf_counter() - t,
           "epoch_seconds": float(h["seconds"]), "val_items": len(val[1])}
    if limit is not None and limit.total and steps < limit.total:
        done = min(steps, limit.total) * _TRAIN_BATCH
        out.update(extrapolated_from_steps=steps, total_steps=limit.total,
                   items_per_s=done / limit.seconds, epoch_seconds=limit.seconds * limit.total / steps)
    else:
        out["items_per_s"] = len(y) / float(h["seconds"])
    return out


def _split(n: int) -> int:
    return int(n * 0.9)


@stage("train_epoch_store")
def train_epoch_store(ctx: Context) -> dict:
    """One training epoch + streaming validation (the last 10%) from the store: ``Embeddings``
    whose vectors are ``StoreRows`` views (positions only), read batch by batch by the lazy
    training table; validation never builds a dense (N_val, C) array."""
    emb = _store_view(ctx)
    y = np.load(ctx.tmp / "labels.npy", mmap_mode="r")
    k = _split(len(y))
    return _train_one_epoch(ctx, emb.take(slice(0, k)), np.asarray(y[:k]), (emb.take(slice(k, None)), np.asarray(y[k:])))


@stage("train_epoch_in_memory")
def train_epoch_in_memory(ctx: Context) -> dict:
    """The same epoch from arrays in memory (the path before the store)."""
    from semcat_kit.encode.embeddings import Embeddings

    need = ctx.catalog.n * (TEXT_DIM + IMAGE_DIM) * 4 * 2 / 1e9
    if need > ctx.args.max_dense_gb:
        return {"skip": f"needs ~{need:.1f} GB > --max-dense-gb {ctx.args.max_dense_gb}"}
    view = _store_view(ctx)
    y = np.load(ctx.tmp / "labels.npy")
    text, image = np.asarray(view.text), np.asarray(view.image)        # into private memory
    k = _split(len(y))
    tr = Embeddings(view.item_ids[:k], text[:k], image[:k], view.text_mask[:k], view.image_mask[:k])
    va = Embeddings(view.item_ids[k:], text[k:], image[k:], view.text_mask[k:], view.image_mask[k:])
    return _train_one_epoch(ctx, tr, y[:k], (va, y[k:]))


# ---------------------------------------------------------------------------------- streaming encode
def _titles_block(a: int, b: int):
    """Ids and titles of rows ``a..b`` of the synthetic catalog (every 100th title missing)."""
    ids = np.char.add("p", np.arange(a, b).astype(str))
    titles = np.char.add("synthetic product title number ", np.arange(a, b).astype(str)).astype(object)
    titles[(np.arange(a, b) % 100) == 0] = None
    return ids, titles


def write_catalog_file(n: int, path: Path, block: int = 65536) -> Path:
    """The synthetic catalog (``item_id``, ``title``) as a Parquet file, written block by block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("item_id", pa.string()), ("title", pa.string())])
    with pq.ParquetWriter(str(path), schema) as w:
        for a in range(0, n, block):
            ids, titles = _titles_block(a, min(n, a + block))
            w.write_table(pa.table({"item_id": pa.array(ids.tolist(), pa.string()),
                                    "title": pa.array(titles.tolist(), pa.string())}, schema=schema))
    return path


@stage("encode_text_store")
def encode_text_store(ctx: Context) -> dict:
    """``encode_into_store`` (what ``semcat encode`` runs on each rank) over N synthetic titles (1%
    missing) with a tiny text encoder into a fresh store. The catalog is a Parquet file (written
    before the stage, block by block) read ``chunk_size`` rows at a time: private memory is one
    chunk plus the shards' bucket tables (4-8 bytes a stored key; the keys are read from the maps)
    -- the duplicate-id check spills its hashes to memory-mapped files beyond 2^18 ids; not the
    catalog, not N x 384 floats. (``encode_catalog(view=True)``
    is this plus the view of ``store_view``.)"""
    from semcat_kit import encode_into_store
    from semcat_kit.encode.encoders import HashingTextEncoder

    # a stand-in text encoder (384-d, deterministic in the title, ~free to run): the stage measures what
    # encoding itself costs and holds (hashing, store lookups and writes, masks, failures), not a transformer
    tiny = HashingTextEncoder(TEXT_DIM)
    n = ctx.catalog.n
    fill = encode_into_store(ctx.catalog_file, text_encoder=tiny, cache_dir=ctx.tmp / "encode_cache",
                             progress=False, batch_size=1024, chunk_size=ctx.args.chunk_size)
    assert fill.n == n and fill.stats["text_encoded"] == n - len(range(0, n, 100)), (fill.n, fill.stats)
    assert len(fill.failures) == len(range(0, n, 100))
    return {"items": n, "catalog_file_mb": ctx.catalog_file.stat().st_size / 2**20}

# ---------------------------------------------------------------------------------- runner
def run_stage(ctx: Context, name: str, fn) -> dict | None:
    import gc

    from semcat_kit._core.memory import release_freed_memory

    gc.collect()
    release_freed_memory()     # freed heap back to the OS: a stage's RssAnon is not what an earlier one freed
    start = _status_kb()["RssAnon"] / 1024
    t = time.perf_counter()
    with MemorySampler() as mem:
        res = fn(ctx)
    secs = time.perf_counter() - t
    if res.get("skip"):
        print(f"skipped: {name} ({res['skip']})", flush=True)
        return None
    res.update(seconds=secs, rss_anon_mb=mem.anon_mb, rss_file_mb=mem.file_mb, rss_anon_start_mb=start)
    ctx.results[name] = res
    print(f"peak_rss_mb: {name} {mem.anon_mb:.0f}", flush=True)
    print(f"start_rss_mb: {name} {start:.0f} (RssAnon when the stage began: what earlier stages and imports hold)",
          flush=True)
    print(f"stage_rss_mb: {name} {mem.anon_mb - start:.0f} (peak - start: what the stage itself adds)", flush=True)
    print(f"peak_rss_file_mb: {name} {mem.file_mb:.0f}", flush=True)
    if res.get("extrapolated_from_steps"):
        print(f"throughput: {name} {res['items_per_s']:.0f} items/s (timed on the first {res['extrapolated_from_steps']} "
              f"of {res['total_steps']} steps; full epoch EXTRAPOLATED to {res['epoch_seconds']:.0f} s; stage "
              f"{secs:.1f} s incl. validation of {res['val_items']:,} rows in {res['val_seconds']:.1f} s)", flush=True)
    elif "items_per_s" in res:
        print(f"throughput: {name} {res['items_per_s']:.0f} items/s (epoch {res['epoch_seconds']:.1f} s; stage "
              f"{secs:.1f} s incl. validation of {res['val_items']:,} rows in {res['val_seconds']:.1f} s)", flush=True)
    else:
        print(f"throughput: {name} {res['items'] / secs:.0f} items/s ({secs:.1f} s)", flush=True)
    if "catalog_file_mb" in res:
        print(f"note: {name} reads the catalog from a {res['catalog_file_mb']:.0f} MB Parquet file in record batches",
              flush=True)
    return res


def ratios_from_stages(stages: dict) -> dict:
    """The peak-memory and throughput ratios of the recorded stage figures (in-memory vs streaming)."""
    out = {}

    def rate(x):
        return x.get("items_per_s", x["items"] / x["seconds"])

    for what, mem, stream in (("train", "train_epoch_in_memory", "train_epoch_store"),
                              ("evaluate", "evaluate_in_memory", "evaluate_streaming")):
        if mem in stages and stream in stages:
            a, b = stages[mem], stages[stream]
            key = "store" if what == "train" else "streaming"
            out[f"{what} peak_rss in_memory/{key}"] = round(a["rss_anon_mb"] / b["rss_anon_mb"], 3)
            out[f"{what} throughput {key}/in_memory"] = round(rate(b) / rate(a), 3)
    return out


def report_ratios(ctx: Context) -> dict:
    """Print ``ratio:`` lines (in-memory path / streaming path, same run) and return them."""
    r, out = ctx.results, {}

    def ratio(name, value):
        out[name] = round(float(value), 3)
        print(f"ratio: {name} {value:.2f}")

    def rate(x):
        return x.get("items_per_s", x["items"] / x["seconds"])

    if "train_epoch_store" in r:
        print(f"check: train_epoch_store val_top1 {r['train_epoch_store']['val_top1']:.4f} "
              f"(validation {r['train_epoch_store']['val_seconds']:.1f} s)")
    if "train_epoch_store" in r and "train_epoch_in_memory" in r:
        a, b = r["train_epoch_in_memory"], r["train_epoch_store"]
        ratio("train peak_rss in_memory/store", a["rss_anon_mb"] / b["rss_anon_mb"])
        ratio("train throughput store/in_memory", rate(b) / rate(a))
    elif "train_epoch_store" in r:
        print("ratio: train peak_rss in_memory/store n/a (in-memory path skipped: too large)")
    if "predict_chunked" in r and "predict_in_memory" in r:
        a, b = r["predict_in_memory"], r["predict_chunked"]
        ratio("predict peak_rss in_memory/chunked", a["rss_anon_mb"] / b["rss_anon_mb"])
        ratio("predict throughput chunked/in_memory", a["seconds"] / b["seconds"])
        import pandas as pd

        x, y = pd.read_parquet(a["output"]), pd.read_parquet(b["output"])
        # same ids and classes; probabilities to float32 rounding (the chunked path reads float32
        # vectors from the store, the in-memory one the generated arrays: same values)
        same = all(x[c].astype(str).equals(y[c].astype(str)) for c in x.columns if not c.startswith("prob_"))
        pdiff = max(float(np.abs(x[c].to_numpy() - y[c].to_numpy()).max()) for c in x.columns if c.startswith("prob_"))
        print(f"check: chunked output equals in-memory output: {same} (max |prob diff| {pdiff:.1e})")
        if not same or pdiff > 1e-6:
            raise SystemExit("chunked and in-memory predictions differ")
    elif "predict_chunked" in r:
        print("ratio: predict peak_rss in_memory/chunked n/a (in-memory path skipped: too large)")
    if "evaluate_streaming" in r and "evaluate_in_memory" in r:
        a, b = r["evaluate_in_memory"], r["evaluate_streaming"]
        ratio("evaluate peak_rss in_memory/streaming", a["rss_anon_mb"] / b["rss_anon_mb"])
        ratio("evaluate throughput streaming/in_memory", a["seconds"] / b["seconds"])
        diff = float(np.nanmax(np.abs(a["metrics"].to_numpy() - b["metrics"].to_numpy())))
        same = list(a["metrics"].index) == list(b["metrics"].index) and diff <= 1e-9
        print(f"check: streaming metrics equal evaluate's (max |diff| {diff:.1e}): {same}")
        if not same:
            raise SystemExit("streaming and in-memory metrics differ")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="products (default 20,000)")
    ap.add_argument("--chunk-size", type=int, default=8192, help="rows per chunk of the chunked stages")
    ap.add_argument("--max-dense-gb", type=float, default=4.0,
                    help="run the in-memory path only when its estimated size is below this (default 4)")
    ap.add_argument("--stages", default=None, help="comma-separated subset of: " + ", ".join(n for n, _ in STAGES))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-steps", type=int, default=None,
                    help="time only the first K batches of the training epoch and extrapolate the epoch (printed "
                         "as such); the stage still builds everything for the full table and validates fully")
    ap.add_argument("--store-dtype", default="float32", choices=("float32", "float16"), help="store precision")
    ap.add_argument("--write-doc", action="store_true",
                    help="record the figures in docs/scale_measured.json and re-render docs/scale.md")
    args = ap.parse_args(argv)
    if not TAX_FILE.exists():
        sys.exit(f"Google taxonomy not found at {TAX_FILE} (set SEMCAT_SHARED_DATA)")
    import torch

    from semcat_kit import Taxonomy

    if args.threads:
        torch.set_num_threads(args.threads)
    tax = Taxonomy.from_google_taxonomy(TAX_FILE)
    wanted = None if args.stages is None else set(args.stages.split(","))
    unknown = (wanted or set()) - {n for n, _ in STAGES}
    if unknown:
        sys.exit(f"unknown stage(s) {sorted(unknown)}; stages: {[n for n, _ in STAGES]}")
    with tempfile.TemporaryDirectory(prefix="bench_scale.") as tmp:
        cat = SyntheticCatalog(args.n, tax, seed=args.seed)
        ctx = Context(args, tax, cat, Path(tmp))
        print(f"bench_scale: N={args.n:,} products, C={tax.n_classes:,} classes (depth {tax.max_depth}), "
              f"text {TEXT_DIM}-d + image {IMAGE_DIM}-d float32, Zipf s={ZIPF_S}, chunk {args.chunk_size}, "
              f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)
        _predictor(ctx)                                     # export + reload the head once, outside the stages
        load0 = os.getloadavg()[0]
        print(f"load average at start: {load0:.1f}", flush=True)
        base = _status_kb()
        print(f"baseline_rss_mb: {base['RssAnon'] / 1024:.0f} (anon) {base['RssFile'] / 1024:.0f} (file)", flush=True)
        t_all = time.perf_counter()
        if wanted is None or "encode_text_store" in wanted:
            t = time.perf_counter()
            ctx.catalog_file = write_catalog_file(args.n, ctx.tmp / "catalog.parquet")
            print(f"catalog file: {ctx.catalog_file.stat().st_size / 2**20:.0f} MB Parquet written in "
                  f"{time.perf_counter() - t:.1f} s (before the stages, block by block)", flush=True)
        def record(ratios):
            sys.path.insert(0, str(ROOT / "bench"))
            import scale_doc

            keep = ("items", "seconds", "rss_anon_mb", "rss_file_mb", "items_per_s", "extrapolated_from_steps",
                    "total_steps", "epoch_seconds", "val_seconds", "val_items", "val_top1", "catalog_file_mb", "shards",
                    "store_gb", "rss_anon_start_mb")
            stages = {k: {f: (round(v[f], 4) if isinstance(v[f], float) else v[f]) for f in keep if f in v}
                      for k, v in ctx.results.items()}
            entry = {"stages": stages, "ratios": ratios, "load": round(load0, 1), "cpus": os.cpu_count(),
                     "threads": torch.get_num_threads(), "store_dtype": args.store_dtype}
            old = scale_doc.load().get("bench_scale", {}).get(str(args.n))
            if wanted is not None and old:
                # a subset of stages re-measured: they replace their old figures, the others stay (the
                # entry says which stages came from this run, and its load)
                merged = dict(old)
                merged["stages"] = {**old["stages"], **stages}
                merged["ratios"] = {**old.get("ratios", {}), **ratios_from_stages(merged["stages"])}
                prev = old.get("rerun", {})
                loads = dict(prev.get("loads") or {st: prev.get("load") for st in prev.get("stages", [])})
                loads.update({st: round(load0, 1) for st in stages})
                merged["rerun"] = {"stages": sorted(loads), "load": round(load0, 1), "loads": loads}
                entry = merged
            scale_doc.record("bench_scale", entry, key=str(args.n))
            return scale_doc

        for name, fn in sorted(STAGES, key=lambda x: ORDER.index(x[0])):
            if wanted is None or name in wanted:
                run_stage(ctx, name, fn)
                if args.write_doc:      # every finished stage at once (a run cut short keeps what it measured)
                    import contextlib
                    import io

                    with contextlib.redirect_stdout(io.StringIO()):
                        record(report_ratios(ctx))
        ratios = report_ratios(ctx)
        print(f"total: {time.perf_counter() - t_all:.0f} s; load average now {os.getloadavg()[0]:.1f}", flush=True)
        if args.write_doc:
            scale_doc = record(ratios)
            print(f"wrote {scale_doc.JSON_PATH} and {scale_doc.DOC_PATH}")

if __name__ == "__main__":
    main()
