"""On-disk cache of embedding vectors keyed by (encoder fingerprint, content hash).

Layout: ``<cache_dir>/<fingerprint digest>/<modality>/shard-<uuid>.npz``; each shard holds
``keys`` (content hashes, uint8 ``(n, 16)``), ``vectors`` float32 ``(n, d)`` and ``checksum``
(BLAKE2b of both). Shards are written atomically and never modified; a shard that fails to
open, has the wrong shape or a bad checksum is moved aside (``*.corrupt``) with a warning and
its items are recomputed. When a fingerprint accumulates many shards they are merged into one.
A different encoder fingerprint is a different folder, so stale vectors are never returned.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from ._io import atomic_path, atomic_write_text

__all__ = ["VectorCache", "content_key"]

KEY_BYTES = 16


def content_key(data: bytes | str) -> bytes:
    """16-byte BLAKE2b digest of text (UTF-8) or raw bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.blake2b(data, digest_size=KEY_BYTES).digest()


def _key_array(keys: list[bytes]) -> np.ndarray:
    # uint8 rows, not numpy 'S' strings: those silently drop trailing NUL bytes of a digest
    if not keys:
        return np.zeros((0, KEY_BYTES), dtype=np.uint8)
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES).copy()


def _key_list(keys: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(keys).tobytes()
    return [flat[i:i + KEY_BYTES] for i in range(0, len(flat), KEY_BYTES)]


def _checksum(keys: np.ndarray, vectors: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(keys).tobytes())
    h.update(np.ascontiguousarray(vectors).tobytes())
    return h.hexdigest()


class VectorCache:
    """Vectors of one modality for one encoder fingerprint.

    Parameters
    ----------
    cache_dir : path
        Root cache folder (shared by all encoders).
    fingerprint : str
        Encoder fingerprint; the cache folder is derived from it.
    modality : str
        ``"text"`` or ``"image"``.
    dim : int
        Vector width; shards with another width are treated as corrupt.
    max_shards : int
        Merge all shards into one when more than this many exist.
    """

    def __init__(self, cache_dir: str | os.PathLike, fingerprint: str, modality: str, dim: int,
                 max_shards: int = 16):
        self.root = Path(cache_dir).expanduser() / hashlib.sha256(fingerprint.encode()).hexdigest()[:24] / modality
        self.root.mkdir(parents=True, exist_ok=True)
        info = self.root.parent / "encoder.json"
        if not info.exists():
            atomic_write_text(info, json.dumps({"fingerprint": fingerprint}, indent=1))
        self.fingerprint, self.modality, self.dim, self.max_shards = fingerprint, modality, int(dim), max_shards
        self.corrupt: list[str] = []
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._shards: list[tuple[Path, np.ndarray, np.ndarray]] = []
        self._pending_keys: list[bytes] = []
        self._pending_vecs: list[np.ndarray] = []

    # ------------------------------------------------------------------------------ read
    def _read_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            # our own handle: np.load leaks the one it opens when the zip directory is unreadable
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                keys, vecs, cs = z["keys"], z["vectors"], str(z["checksum"])
            ok = (keys.shape == (len(keys), KEY_BYTES) and keys.dtype == np.uint8 and vecs.dtype == np.float32
                  and vecs.shape == (len(keys), self.dim) and _checksum(keys, vecs) == cs)
            if ok:
                return keys, vecs
            reason = "checksum or shape mismatch"
        except FileNotFoundError:
            return None  # merged away by a concurrent compaction: its vectors live in the new shard
        except Exception as e:  # noqa: BLE001 - any unreadable shard is recomputed, never fatal
            reason = f"{type(e).__name__}: {e}"
        warnings.warn(f"embedding cache shard {path} is corrupt ({reason}); moved aside, its items will be "
                      "recomputed", RuntimeWarning, stacklevel=3)
        self.corrupt.append(str(path))
        try:
            os.replace(path, path.with_suffix(".corrupt"))
        except OSError:
            pass
        return None

    def _load_index(self) -> dict[bytes, tuple[int, int]]:
        if self._index is None:
            self._index = {}
            for path in sorted(self.root.glob("shard-*.npz")):  # a shard is immutable once written
                got = self._read_shard(path)
                if got is None:
                    continue
                keys, vecs = got
                s = len(self._shards)
                self._shards.append((path, keys, vecs))
                for r, k in enumerate(_key_list(keys)):
                    self._index[k] = (s, r)
        return self._index

    def __len__(self) -> int:
        return len(self._load_index())

    def get(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Look up keys; returns ``(found (N,) bool, vectors (N, dim) float32, zeros where not found)``."""
        index = self._load_index()
        found = np.zeros(len(keys), dtype=bool)
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            hit = index.get(k)
            if hit is not None:
                s, r = hit
                out[i] = self._shards[s][2][r]
                found[i] = True
        return found, out

    # ----------------------------------------------------------------------------- write
    @property
    def pending(self) -> int:
        """Number of vectors queued but not yet written."""
        return len(self._pending_keys)

    def put(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Queue new vectors; they reach disk on ``flush()``."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"cache put: vectors {vectors.shape} do not match {len(keys)} keys x dim {self.dim}")
        self._pending_keys.extend(keys)
        self._pending_vecs.append(vectors)

    def _write_shard(self, keys: np.ndarray, vecs: np.ndarray) -> Path:
        path = self.root / f"shard-{uuid.uuid4().hex}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=keys, vectors=vecs, checksum=np.array(_checksum(keys, vecs)))
                f.flush()
                os.fsync(f.fileno())
        return path

    def flush(self) -> None:
        """Write queued vectors as one new shard (atomic), merging shards when there are too many."""
        if not self._pending_keys:
            return
        keys = _key_array(self._pending_keys)
        vecs = np.concatenate(self._pending_vecs).astype(np.float32, copy=False)
        self._pending_keys, self._pending_vecs = [], []
        path = self._write_shard(keys, vecs)
        index = self._load_index()
        s = len(self._shards)
        self._shards.append((path, keys, vecs))
        for r, k in enumerate(_key_list(keys)):
            index[k] = (s, r)
        if len(self._shards) > self.max_shards:
            self.compact()

    def compact(self) -> None:
        """Merge all shards into one (atomic write first, then remove the old ones)."""
        self._load_index()
        if len(self._shards) <= 1:
            return
        all_keys = np.concatenate([k for _, k, _ in self._shards])
        all_vecs = np.concatenate([v for _, _, v in self._shards])
        _, first = np.unique(all_keys, axis=0, return_index=True)
        first.sort()
        path = self._write_shard(all_keys[first], all_vecs[first])
        for old, _, _ in self._shards:
            old.unlink(missing_ok=True)
        self._shards, self._index = [], None
        self._load_index()
        assert any(p == path for p, _, _ in self._shards)
