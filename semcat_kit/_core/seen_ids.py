"""``SeenIds``: the ids seen so far in a stream of chunks, as sorted 64-bit hashes (spilled to
anonymous temporary files above a size), for duplicate-id checks that do not grow a Python set."""
from __future__ import annotations

import tempfile

import numpy as np

from .contracts import compact_ids, id_hashes

__all__ = ["SeenIds"]


class SeenIds:
    """Ids seen so far in a stream of chunks, as sorted 64-bit hashes (no Python set).

    ``add(ids)`` returns the ids of the chunk that an earlier chunk already had (by hash).
    Hashes are kept in tiers of sorted arrays (a tier is merged with the next when it grows as
    large), so checking N ids in chunks costs O(N log N), never a full re-sort per chunk.

    Private memory stays flat in N: a tier of more than ``spill_rows`` hashes is written to an
    anonymous temporary file (``tempfile.TemporaryFile`` in ``spill_dir``, default
    ``tempfile.gettempdir()``: set ``TMPDIR``; on POSIX unlinked as soon as it is created, so
    nothing is left behind even by a killed process; on Windows deleted when its map is closed), memory-mapped and sorted in place there: its
    pages belong to the page cache, which the OS writes back and drops, not to the process. A
    folder that cannot take the file (read-only, full) is warned about once and the hashes stay
    in memory (8 bytes an id): the run goes on.

    Parameters
    ----------
    spill_rows : int
        Largest tier kept in memory (8 bytes a hash; default 2^18 = 2 MB). ``None``: never spill.
    spill_dir : path, optional
    """

    def __init__(self, spill_rows: int | None = 1 << 18, spill_dir=None):
        self._tiers: list[np.ndarray] = []
        self.spill_rows, self.spill_dir = spill_rows, spill_dir
        self.spill_error: str | None = None

    def __len__(self) -> int:
        return int(sum(len(t) for t in self._tiers))

    @property
    def spilled(self) -> int:
        """Hashes held in memory-mapped files."""
        return int(sum(len(t) for t in self._tiers if isinstance(t, np.memmap)))

    def _sorted(self, parts: list[np.ndarray]) -> np.ndarray:
        n = sum(len(p) for p in parts)
        if self.spill_rows is None or n <= self.spill_rows or self.spill_error is not None:
            return np.sort(np.concatenate(parts)) if len(parts) > 1 else np.sort(parts[0])
        try:
            return self._spill(parts, n)
        except OSError as e:
            import warnings

            where = self.spill_dir if self.spill_dir is not None else tempfile.gettempdir()
            self.spill_error = f"{type(e).__name__}: {e.strerror or e}"
            warnings.warn(f"the duplicate-id check could not write its temporary file in {where} "
                          f"({self.spill_error}); it keeps the ids' hashes in memory instead (8 bytes an id). "
                          "Set TMPDIR to a writable folder with free space", RuntimeWarning, stacklevel=4)
            return np.sort(np.concatenate(parts))

    def _spill(self, parts: list[np.ndarray], n: int) -> np.memmap:
        block = 1 << 20
        with tempfile.TemporaryFile(prefix="semcat-seen-ids-", suffix=".u64", dir=self.spill_dir) as f:
            for p in parts:            # written, not a sparse file: a full disk is an OSError here, never
                p = np.ascontiguousarray(p, dtype=np.uint64)            # a SIGBUS when the map is touched
                for a in range(0, len(p), block):
                    f.write(memoryview(p[a:a + block]).cast("B"))
            f.flush()
            out = np.memmap(f, dtype=np.uint64, mode="r+", shape=(n,))   # the map outlives the file object
        out.sort(kind="quicksort")     # in place in the map (a stable sort would take n/2 private words)
        return out

    def add(self, ids) -> np.ndarray:
        a = compact_ids(ids)
        hu = id_hashes(a)
        again = np.zeros(len(a), dtype=bool)
        for t in self._tiers:
            i = np.searchsorted(t, hu)
            again |= t[np.minimum(i, len(t) - 1)] == hu
        if again.any():
            return a[again]
        if not len(a):
            return a[:0]
        self._tiers.append(np.sort(hu))
        while len(self._tiers) > 1 and len(self._tiers[-2]) <= len(self._tiers[-1]):
            b = self._tiers.pop()
            self._tiers[-1] = self._sorted([self._tiers[-1], b])
        return a[:0]
