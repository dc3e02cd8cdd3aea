"""Encoding one catalog column, batch by batch, against the embedding store.

Titles: hashed, looked up (vectorised), the misses encoded once per distinct text. Images: read
once in the DataLoader workers, the bytes hashed, looked up, and decoded only when missing.
Unusable items (empty title; missing, 0-byte, corrupt or oversized image) are collected as
failures; they never stop the run.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from .store import KEY_BYTES, VectorStore, as_keys, content_key, content_keys
from .encoders import Encoder
from .encoders._base import length_order
from ..datasets.images import NO_IMAGE_PATH, ImageError, image_digest, image_problem, load_image, read_image_bytes

from .columns import column_chunks

__all__ = ["encode_text_column", "encode_image_column", "image_key", "encoder_meta"]

def _no_path(path) -> bool:
    """True for a missing image path (None, NaN or blank)."""
    return path is None or (isinstance(path, float) and np.isnan(path)) or (isinstance(path, str) and not path.strip())


def _read_image_bytes(path) -> tuple[bytes | None, str | None]:
    """The file's bytes, read once (hashed and decoded from the same bytes), or a failure reason.

    Goes through ``images.read_image_bytes``: a FIFO, a device, a folder or an oversized file is
    refused before anything is read.
    """
    if _no_path(path):
        return None, NO_IMAGE_PATH
    try:
        return read_image_bytes(path), None
    except ImageError as e:
        return None, e.reason


def image_key(path) -> tuple[bytes | None, str | None]:
    """Content key of an image file (streamed hash, same checks), or a failure reason."""
    if _no_path(path):
        return None, NO_IMAGE_PATH
    try:
        return image_digest(path, digest_size=KEY_BYTES), None
    except ImageError as e:
        return None, e.reason


class _ImageBatches(torch.utils.data.Dataset):
    """Batch ``b`` of the catalog's images, prepared in a DataLoader worker.

    Each file is read once; its bytes are hashed (the cache key), looked up in the store
    (vectorised, per batch) and decoded only when missing, once per distinct content.
    """

    def __init__(self, paths: list, batch_size: int, transform, max_pixels, store: VectorStore | None, dim: int):
        self.paths, self.bs, self.transform, self.max_pixels = paths, batch_size, transform, max_pixels
        self.store, self.dim = store, dim

    def __len__(self):
        return (len(self.paths) + self.bs - 1) // self.bs

    def __getitem__(self, b):
        rows, datas, fails = [], [], []
        for i in range(b * self.bs, min(len(self.paths), (b + 1) * self.bs)):
            data, err = _read_image_bytes(self.paths[i])
            if err is None:
                rows.append(i)
                datas.append(data)
            else:
                fails.append((i, err))
        keys = as_keys([content_key(d) for d in datas])
        ukeys, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True) if len(keys) else \
            (keys, np.zeros(0, np.int64), np.zeros(0, np.int64))
        if self.store is not None:
            found, vecs = self.store.get(ukeys)
        else:
            found, vecs = np.zeros(len(ukeys), bool), np.zeros((len(ukeys), self.dim), np.float32)
        xs, x_u, bad_u = [], [], []
        for u in np.flatnonzero(~found):
            try:
                xs.append(self.transform(load_image(datas[first[u]], max_pixels=self.max_pixels)))
                x_u.append(int(u))
            except ImageError as e:
                bad_u.append((int(u), e.reason))
            except Exception as e:  # noqa: BLE001 - a failing transform must not end a long run
                bad_u.append((int(u), f"preprocessing failed ({type(e).__name__}: {e})"))
        return {"rows": np.asarray(rows, dtype=np.int64), "inv": np.asarray(inv, dtype=np.int64).reshape(-1),
                "ukeys": ukeys, "found": found, "hits": vecs[found], "x": torch.stack(xs) if xs else None,
                "x_u": np.asarray(x_u, dtype=np.int64), "bad_u": bad_u, "fails": fails}


def _identity(batch):
    return batch


@contextlib.contextmanager
def _flush_on_exit(store: VectorStore | None):
    """Write whatever was computed to the store even if the run is interrupted."""
    try:
        yield
    finally:
        if store is not None:
            store.flush()


def _default_workers(encoder: Encoder) -> int:
    if encoder.device.type == "cuda":
        return min(4, max(1, (os.cpu_count() or 2) - 1))
    return 0  # on CPU the model already uses every core; decoding small photos inline is faster


def _deliver(rows, inv, done, ukeys, uvec, out, row_keys, mask) -> None:
    """Hand each row its distinct item's result: ``rows[i]`` holds item ``inv[i]``, done when ``done[inv[i]]``.

    Writes the vector to ``out`` (when given), the content key to ``row_keys`` (when given) and marks
    ``mask``.
    """
    ok = done[inv]
    if out is not None:
        out[rows[ok]] = uvec[inv[ok]]
    if row_keys is not None:
        row_keys[rows[ok]] = ukeys[inv[ok]]
    mask[rows[ok]] = True


def encoder_meta(enc: Encoder | None, modality: str) -> dict | None:
    if enc is None:
        return None
    return {"name": enc.name, "fingerprint": enc.fingerprint,
            "dim": int(enc.text_dim if modality == "text" else enc.image_dim)}


def encode_text_column(titles, ids, enc: Encoder, store, out, mask, batch_size, chunk_size, progress, failures,
                       row_keys=None, counts: dict | None = None):
    """Titles chunk by chunk: hash, look up (vectorised), encode the misses once per distinct text, store.

    ``out`` None (a view on the store is returned): hits are only located, never read, and each
    row's key goes to ``row_keys``. ``counts["hashed"]`` (if given) counts the titles hashed.
    """
    from tqdm.auto import tqdm

    n, computed = len(ids), 0
    chunks = column_chunks(titles, "title", chunk_size) if not isinstance(titles, list) else \
        (titles[a:a + chunk_size] for a in range(0, len(titles), chunk_size))
    with _flush_on_exit(store), tqdm(total=n, desc=f"encoding titles ({enc.name})", unit="title",
                                     disable=not progress or n == 0) as bar:
        for c0, chunk in zip(range(0, n, chunk_size), chunks):
            rows, texts = [], []
            for i in range(c0, min(n, c0 + chunk_size)):
                t = chunk[i - c0]
                if t is None or (isinstance(t, float) and np.isnan(t)):
                    failures.append((ids[i], "text", "missing title"))
                    continue
                if not isinstance(t, str):
                    t = str(t)
                if not t.strip():
                    failures.append((ids[i], "text", "empty title"))
                    continue
                rows.append(i)
                texts.append(t)
            if rows:
                rows = np.asarray(rows, dtype=np.int64)
                keys = content_keys(texts)
                if counts is not None:
                    counts["hashed"] += len(texts)
                ukeys, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
                inv = inv.reshape(-1)
                if store is not None and out is None:
                    found, uvec = store.contains(ukeys), None
                elif store is not None:
                    found, uvec = store.get(ukeys)
                else:
                    found, uvec = np.zeros(len(ukeys), bool), np.zeros((len(ukeys), enc.text_dim), np.float32)
                miss = np.flatnonzero(~found)
                miss = miss[length_order([texts[first[j]] for j in miss])]     # similar lengths per batch
                try:
                    for s in range(0, len(miss), batch_size):
                        u = miss[s:s + batch_size]
                        v = enc.encode_texts([texts[first[j]] for j in u], batch_size=batch_size)
                        if uvec is not None:
                            uvec[u] = v
                        found[u] = True
                        computed += len(u)
                        if store is not None:
                            store.put(ukeys[u], v)
                finally:  # an interrupted chunk still delivers (and stores) what it finished
                    _deliver(rows, inv, found, ukeys, uvec, out, row_keys, mask)
            if store is not None:
                store.flush()
            bar.update(min(n, c0 + chunk_size) - c0)
    return computed


def encode_image_column(paths: list, ids, enc: Encoder, store, out, mask, batch_size, chunk_size, num_workers, progress,
                        max_pixels, failures, row_keys=None, counts: dict | None = None):
    """Images batch by batch; reading, hashing, lookup and decoding happen in the DataLoader workers.

    ``counts["hashed"]`` (if given) counts the image files read and hashed.
    """
    from tqdm.auto import tqdm

    n, computed = len(paths), 0
    if n == 0:
        return 0
    ds = _ImageBatches(paths, batch_size, enc.image_transform, max_pixels, store, enc.image_dim)
    workers = _default_workers(enc) if num_workers is None else int(num_workers)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
                                     pin_memory=enc.device.type == "cuda", persistent_workers=False)
    with _flush_on_exit(store), tqdm(total=n, desc=f"encoding images ({enc.name})", unit="img",
                                     disable=not progress) as bar:
        for b in dl:
            for i, reason in b["fails"]:
                failures.append((ids[i], "image", reason if reason == NO_IMAGE_PATH else image_problem(reason, paths[i])))
            rows, inv, ukeys = b["rows"], b["inv"], b["ukeys"]
            if counts is not None:
                counts["hashed"] += len(rows)      # the files read and hashed (in the worker)
            ok_u = np.asarray(b["found"], dtype=bool).copy()
            uvec = np.zeros((len(ukeys), enc.image_dim), dtype=np.float32)
            uvec[ok_u] = b["hits"]
            if b["x"] is not None:
                x_u = b["x_u"]
                if store is not None:  # content seen earlier in this run (another batch) is not embedded twice
                    f2, v2 = store.get(ukeys[x_u])
                else:
                    f2, v2 = np.zeros(len(x_u), bool), None
                if f2.any():
                    uvec[x_u[f2]] = v2[f2]
                need = ~f2
                if need.any():
                    v = enc.embed_image_batch(b["x"][torch.from_numpy(need)] if not need.all() else b["x"])
                    uvec[x_u[need]] = v
                    computed += int(need.sum())
                    if store is not None:
                        store.put(ukeys[x_u[need]], v)
                ok_u[x_u] = True
            for u, reason in b["bad_u"]:
                for i in rows[inv == u]:
                    failures.append((ids[i], "image", image_problem(reason, paths[i])))
            _deliver(rows, inv, ok_u, ukeys, uvec, out, row_keys, mask)
            if store is not None and store.pending >= chunk_size:
                store.flush()
            bar.update(len(rows) + len(b["fails"]))
    return computed

