"""One answer per input: coercion and validation shared by every public function.

Every module that takes probabilities, labels, neighbours, ``k``, embeddings, a device or a
precision from a user goes through the functions here, so the same bad input gets the same error
everywhere (the table-driven ``tests/test_contracts.py`` feeds the same inputs to every public
entry point). Functions return clean arrays (numpy) or torch objects; they never print.

Rules
-----
* **probabilities** (N, C): real, finite, >= 0, each row summing to 1 within :data:`SUM_TOL`
  (logits are refused, naming the rows); integer dtypes are promoted to float64, float32 kept.
* **labels** (N,): integer class indices in ``[0, C)``, integral floats (``3.0``), or label
  strings (full paths or aliases, mapped with ``taxonomy.index_of``); booleans, non-integral
  floats, NaN and out-of-range indices are refused, naming the rows.
* **neighbours**: a :class:`semcat_kit.labels.similarity.Neighbors` (validated on construction) or an
  ``(indices, sims)`` pair of the same (C, k) shape, ``-1`` the only padding index.
* **k** (a count of predictions or neighbours): a positive integer; ``k=0`` only where a
  function documents it (``minimum=0``).
* **device**: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
  ``"mps"``; an unavailable accelerator is a ``ValueError`` naming the argument.
* **precision**: ``"auto"`` (bf16 on CUDA, fp32 elsewhere), ``"fp32"``, ``"bf16"``, ``"fp16"``
  (fp16 only on CUDA); mixed precision is autocast for the forward pass only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "SUM_TOL", "UnknownLabelError", "DEVICES", "PRECISIONS", "fmt_rows", "as_probs", "as_labels", "as_neighbors",
    "as_neighbor_indices", "as_k", "row_block", "resolve_device", "resolve_half", "resolve_precision", "autocast",
    "EmbeddingTable", "LazyEmbeddingTable", "as_embedding_table", "EmptyRowsWarning", "EMPTY_ROW_POLICIES",
    "compact_ids", "id_hashes", "duplicated_ids", "check_unique_ids", "DuplicateIdError", "check_id_values",
]

#: Row-sum tolerance for probabilities (float32 softmax over 50k classes is within ~1e-5).
SUM_TOL = 1e-3
#: Device names accepted everywhere (``cuda:N`` too).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Precision names accepted everywhere.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Working-memory budget (array elements) for row blocks.
_BLOCK_ELEMS = 4_000_000


def fmt_rows(rows, limit: int = 8) -> str:
    """``[3, 7, 9] (and 12 more)``: the offending rows of an error message."""
    rows = np.asarray(rows)
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" (and {len(rows) - limit} more)" if len(rows) > limit else ""
    return f"[{shown}]{more}"


def _to_numpy(x):
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().cpu().numpy()
    if isinstance(x, (pd.Series, pd.Index)):
        return x.to_numpy()
    return x


# ---------------------------------------------------------------------------------- probabilities
def as_probs(probs, n_classes: int | None = None, *, name: str = "probs", allow_empty: bool = False) -> np.ndarray:
    """Validate a (N, C) probability matrix and return it as a float array.

    Raises
    ------
    ValueError
        Wrong shape, no rows, NaN/inf values, negative values (logits) or row sums away from 1;
        the message names the offending rows.
    """
    p = np.asarray(_to_numpy(probs))
    if p.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_samples, n_classes) array of probabilities, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.number) or np.issubdtype(p.dtype, np.complexfloating) or p.dtype.kind == "b":
        raise ValueError(f"{name} must hold real numbers, got dtype {p.dtype}")
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} has no rows: nothing to evaluate")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"{name} has {p.shape[1]} columns but the taxonomy has {n_classes} classes; "
                         "column c must be the probability of taxonomy.classes[c]")
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} has NaN or infinite values in rows {fmt_rows(np.flatnonzero(bad))}; "
                         "fix or drop those samples")
    neg = (p < 0).any(axis=1)
    if neg.any():
        raise ValueError(f"{name} has negative values in rows {fmt_rows(np.flatnonzero(neg))}: these look "
                         "like logits. Pass probabilities (e.g. scipy.special.softmax(logits, axis=1))")
    s = p.sum(axis=1, dtype=np.float64)
    off = np.abs(s - 1.0) > SUM_TOL
    if off.any():
        rows = np.flatnonzero(off)
        sums = ", ".join(f"{s[r]:.4g}" for r in rows[:5])
        raise ValueError(f"{name} rows {fmt_rows(rows)} sum to {sums}, not 1: pass probabilities, not "
                         "logits or scores (apply a softmax, or renormalise each row)")
    return p


# ---------------------------------------------------------------------------------- labels
class UnknownLabelError(KeyError, ValueError):
    """A label string that is not a class of the taxonomy (both a failed lookup and a bad value)."""

    def __str__(self) -> str:   # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def as_labels(y, n_samples: int | None = None, taxonomy=None, *, name: str = "y_true",
              n_classes: int | None = None, against: str = "probs") -> np.ndarray:
    """Class indices (int64) from integer indices, integral floats or label strings.

    ``n_samples`` (optional) is the row count of ``against`` that ``y`` must align with.
    """
    if y is None:
        raise ValueError(f"{name} is missing: pass class indices or label paths, one per item")
    arr = np.asarray(_to_numpy(y))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class per sample), got shape {arr.shape}")
    if n_samples is not None and len(arr) != n_samples:
        raise ValueError(f"{name} has {len(arr)} entries but {against} has {n_samples} rows; they must align")
    C = n_classes if n_classes is not None else (taxonomy.n_classes if taxonomy is not None else None)
    if arr.dtype.kind in "OUS":
        if taxonomy is None:
            raise ValueError(f"{name} holds strings; pass integer class indices or a taxonomy to map them")
        missing = np.flatnonzero(pd.isna(arr)) if arr.dtype.kind == "O" else np.array([], dtype=np.int64)
        if len(missing):
            raise ValueError(f"{name} has no label in rows {fmt_rows(missing)}; drop unlabelled rows first "
                             "(their label is None/NaN)")
        try:
            return np.asarray(taxonomy.index_of([str(v) for v in arr]), dtype=np.int64)
        except KeyError as e:
            raise UnknownLabelError(f"{name}: {e.args[0]}") from None
    if arr.dtype.kind == "b" or not np.issubdtype(arr.dtype, np.number) or arr.dtype.kind == "c":
        raise ValueError(f"{name} must hold integer class indices or label paths, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        nonint = ~np.isfinite(arr) | (arr != np.round(arr))
        if nonint.any():
            raise ValueError(f"{name} has non-integer values in rows {fmt_rows(np.flatnonzero(nonint))}; "
                             "pass class indices")
    arr = arr.astype(np.int64)
    if C is not None:
        out = (arr < 0) | (arr >= C)
        if out.any():
            rows = np.flatnonzero(out)
            raise ValueError(f"{name} rows {fmt_rows(rows)} hold class indices "
                             f"{[int(v) for v in arr[rows[:5]]]} outside [0, {C}); "
                             "use taxonomy.index_of(labels) to get indices")
    return arr


# ---------------------------------------------------------------------------------- neighbours
def as_neighbors(neighbors, n_classes: int, *, name: str = "neighbors") -> tuple[np.ndarray, np.ndarray]:
    """``(indices int64, sims float64)`` of shape (C, k) from a ``Neighbors`` or an ``(indices, sims)`` pair."""
    if hasattr(neighbors, "indices") and hasattr(neighbors, "sims"):
        idx, sims = neighbors.indices, neighbors.sims
    elif isinstance(neighbors, (tuple, list)) and len(neighbors) == 2:
        idx, sims = neighbors
    else:
        raise TypeError(f"{name} must be a semcat_kit.labels.similarity.Neighbors (from label_neighbors) "
                        f"or an (indices, sims) pair, not {type(neighbors).__name__}")
    idx = as_neighbor_indices(idx, n_classes, name=name)
    sims = np.asarray(_to_numpy(sims), dtype=np.float64)
    if sims.shape != idx.shape:
        raise ValueError(f"{name}.indices {idx.shape} and {name}.sims {sims.shape} must be the same (C, k) shape")
    return idx, sims


def as_neighbor_indices(neighbors, n_classes: int, *, name: str = "neighbors") -> np.ndarray:
    """(C, k) int64 neighbour indices (``-1`` padding) from a ``Neighbors`` or an index array."""
    idx = neighbors.indices if hasattr(neighbors, "indices") else neighbors
    idx = np.asarray(_to_numpy(idx))
    if idx.ndim != 2:
        raise ValueError(f"{name}.indices must be a 2-D (n_classes, k) array, got shape {idx.shape}")
    if idx.shape[0] != n_classes:
        raise ValueError(f"{name} cover {idx.shape[0]} classes but the taxonomy has {n_classes}; "
                         "compute neighbours from this taxonomy's class embeddings")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name}.indices must be integers (padding -1), got dtype {idx.dtype}")
    bad = (idx < -1) | (idx >= n_classes)
    if bad.any():
        raise ValueError(f"{name}.indices rows {fmt_rows(np.flatnonzero(bad.any(1)))} hold values outside "
                         f"[-1, {n_classes}); -1 is the only padding value")
    return idx.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------- k, blocks
def as_k(k, name: str = "k", *, minimum: int = 1) -> int:
    """A count ``k`` as an int >= ``minimum`` (1 unless a function documents 0)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {k!r}")
    return int(k)


def row_block(n_cols: int, per_row: int = 1) -> int:
    """Rows per block so that a (rows, n_cols * per_row) work array stays within the memory budget."""
    return max(1, _BLOCK_ELEMS // max(1, n_cols * per_row))


# ---------------------------------------------------------------------------------- device, precision
def resolve_device(device: str | torch.device = "auto", *, name: str = "device") -> torch.device:
    """``"auto"``/``"cpu"``/``"cuda[:N]"``/``"mps"`` (or a ``torch.device``) -> an available device.

    Raises
    ------
    ValueError
        Not a device name, or an accelerator that is not available here; names ``name``.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str):
            raise ValueError(f"{name} must be a device name ('auto', 'cpu', 'cuda', 'cuda:N' or 'mps'), "
                             f"not {type(device).__name__}")
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"{name}={device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
        if dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"{name}={device!r} is not supported; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={str(device)!r} but CUDA is not available on this machine; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={str(device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}={str(device)!r} but MPS is not available on this machine; use 'auto' or 'cpu'")
    return dev


def check_device_name(device, *, name: str = "device") -> str:
    """Validate the *spelling* of a device name without requiring the device (for configs)."""
    import re

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ValueError(f"{name} = {device!r} is not allowed; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return device


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision_name(precision, *, name: str = "precision") -> str:
    """Validate the spelling of a precision (``auto``, ``fp32``, ``bf16``, ``fp16``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{name} = {precision!r} is not allowed; choose one of {', '.join(map(repr, PRECISIONS))}")
    return precision


def resolve_half(device: torch.device, half: bool | None = None, *, name: str = "half") -> bool:
    """Whether an encoder runs in fp16 on ``device``: ``None`` means exactly on CUDA; fp16 is
    refused off CUDA (``ValueError`` naming ``name``)."""
    if half is None:
        return device.type == "cuda"
    if half and device.type != "cuda":
        raise ValueError(f"{name}: half precision is only supported on CUDA here; pass half=False on {device.type}")
    return bool(half)


def resolve_precision(precision: str, device: torch.device, *, name: str = "precision") -> torch.dtype:
    """The compute dtype of the forward pass: ``auto`` is bf16 on CUDA, fp32 elsewhere.

    fp16 is refused off CUDA (no fast fp16 kernels for these layers on CPU/MPS).
    """
    check_precision_name(precision, name=name)
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"{name}='fp16' needs a CUDA device (got {device}); use 'fp32' or 'bf16'")
    return _DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast context for ``dtype`` on ``device`` (a no-op for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------- embeddings
@dataclass
class EmbeddingTable:
    """Float32 tensors of one embeddings table, missing rows zeroed and flagged by the masks."""

    text: torch.Tensor | None
    image: torch.Tensor | None
    text_mask: torch.Tensor
    image_mask: torch.Tensor
    item_ids: np.ndarray | None

    def __len__(self) -> int:
        return len(self.text_mask)

    @property
    def text_dim(self) -> int | None:
        return None if self.text is None else int(self.text.shape[1])

    @property
    def image_dim(self) -> int | None:
        return None if self.image is None else int(self.image.shape[1])

    def to(self, device) -> "EmbeddingTable":
        """The whole table on ``device``."""
        def mv(x):
            return None if x is None else x.to(device)
        return EmbeddingTable(mv(self.text), mv(self.image), mv(self.text_mask), mv(self.image_mask), self.item_ids)

    def take(self, rows) -> "EmbeddingTable":
        """The table of the rows ``rows`` (positions or a slice), in that order."""
        if not isinstance(rows, slice):
            rows = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=self.text_mask.device)

        def sel(x):
            return None if x is None else x[rows]
        ids = None if self.item_ids is None else self.item_ids[rows if isinstance(rows, slice) else rows.cpu().numpy()]
        return EmbeddingTable(sel(self.text), sel(self.image), sel(self.text_mask), sel(self.image_mask), ids)

    def batch(self, idx, device, non_blocking: bool = False):
        """``(text, image, image_mask, text_mask)`` of the rows ``idx`` on ``device`` (FusionHead's inputs)."""
        idx = torch.as_tensor(idx).to(self.text_mask.device)

        def sel(x):   # index_select: a row copy, ~5x faster than x[idx]'s generic gather on the CPU
            return None if x is None else x.index_select(0, idx).to(device, non_blocking=non_blocking)
        return sel(self.text), sel(self.image), sel(self.image_mask), sel(self.text_mask)

    def fit_to(self, text_dim: int | None, image_dim: int | None, what: str = "emb") -> "EmbeddingTable":
        """Check the table against a head's inputs (``None``: modality unused) and fill what it lacks.

        A dimension mismatch, or a single-modality head given only the other modality, is a
        ``ValueError`` naming ``what``; a missing modality the head uses becomes zeros flagged missing.
        """
        _check_dims_only(self, text_dim, image_dim, what)
        return self.with_modalities(text_dim, image_dim)

    def with_modalities(self, text_dim, image_dim) -> "EmbeddingTable":
        """A table lacking a whole modality the head uses: zeros flagged missing."""
        import dataclasses

        out = self
        if image_dim and out.image is None:
            out = dataclasses.replace(out, image=torch.zeros(len(out), image_dim),
                                      image_mask=torch.zeros(len(out), dtype=torch.bool))
        if text_dim and out.text is None:
            out = dataclasses.replace(out, text=torch.zeros(len(out), text_dim),
                                      text_mask=torch.zeros(len(out), dtype=torch.bool))
        return out


class LazyEmbeddingTable:
    """An embeddings table that stays where it is (memory-mapped files, a store's view).

    Rows are gathered per batch (sorted for locality, cast to float32, missing rows zeroed),
    pinned and copied without blocking on CUDA; memory is bounded by the batch, not by N.
    Same interface as :class:`EmbeddingTable` (``len``, ``batch``, ``with_modalities``,
    ``fit_to``, ``text_dim``/``image_dim``).
    """

    lazy = True

    def __init__(self, text, image, text_mask: torch.Tensor, image_mask: torch.Tensor, item_ids,
                 text_dim: int | None = None, image_dim: int | None = None):
        self.text, self.image = text, image
        self.text_mask, self.image_mask, self.item_ids = text_mask, image_mask, item_ids
        self._text_dim = text_dim if text is None else int(text.shape[1])
        self._image_dim = image_dim if image is None else int(image.shape[1])

    def __len__(self) -> int:
        return len(self.text_mask)

    @property
    def text_dim(self):
        return self._text_dim

    @property
    def image_dim(self):
        return self._image_dim

    def to(self, device) -> "LazyEmbeddingTable":
        return self          # stays on disk; batches move

    def batch(self, idx, device, non_blocking: bool = False):
        idx = torch.as_tensor(idx).cpu()
        order = torch.argsort(idx)
        inv = torch.empty_like(order)
        inv[order] = torch.arange(len(order))
        rows = idx[order].numpy()
        pin = torch.device(device).type == "cuda"

        def sel(x, dim, mask):
            m = mask[idx]
            if x is None:
                if not dim:
                    return None
                out = torch.zeros(len(idx), dim)
            else:
                out = torch.from_numpy(np.asarray(x[rows], dtype=np.float32))[inv]
                out = torch.where(m[:, None], out, torch.zeros((), dtype=out.dtype))
            if pin:
                out = out.pin_memory()
            return out.to(device, non_blocking=non_blocking)
        tm, im = self.text_mask[idx], self.image_mask[idx]
        return (sel(self.text, self._text_dim, self.text_mask), sel(self.image, self._image_dim, self.image_mask),
                im.to(device), tm.to(device))

    def with_modalities(self, text_dim, image_dim) -> "LazyEmbeddingTable":
        return LazyEmbeddingTable(self.text, self.image, self.text_mask, self.image_mask, self.item_ids,
                                  text_dim=self._text_dim or text_dim, image_dim=self._image_dim or image_dim)

    def fit_to(self, text_dim, image_dim, what: str = "emb") -> "LazyEmbeddingTable":
        _check_dims_only(self, text_dim, image_dim, what)   # same checks as the in-memory table
        return self.with_modalities(text_dim, image_dim)


def _check_dims_only(table, text_dim, image_dim, what):
    for name, dim, have in (("text", text_dim, table.text_dim), ("image", image_dim, table.image_dim)):
        x = getattr(table, name)
        if dim and x is not None and have != dim:
            raise ValueError(f"{what}.{name} has dimension {have} but the model expects {dim}; use the same "
                             f"{name} encoder as in training")
    if not image_dim and table.text is None:
        raise ValueError(f"{what} has no text embeddings but the model uses text only (text_dim={text_dim})")
    if not text_dim and table.image is None:
        raise ValueError(f"{what} has no image embeddings but the model uses images only (image_dim={image_dim})")


#: Tables with more elements than this are read lazily (memory-mapped) by default.
LAZY_ELEMENTS = 200_000_000


def rows_desc(rows: np.ndarray, ids=None) -> str:
    """``row 3 (item 'a1'), row 9 (item 'b2') and 4 more``."""
    shown = rows[:5]
    if ids is not None:
        txt = ", ".join(f"row {r} (item {str(ids[r])!r})" for r in shown)
    else:
        txt = ", ".join(f"row {r}" for r in shown)
    return txt + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


class EmptyRowsWarning(UserWarning):
    """Rows with no usable modality (every mask False) were given where they carry no information."""


EMPTY_ROW_POLICIES = ("zero", "warn", "error")


def as_embedding_table(emb: Any, what: str = "emb", lazy: bool | None = None, empty: str = "zero"):
    """An ``Embeddings`` (or a bare (N, d) array, taken as text) -> :class:`EmbeddingTable`.

    NaN/inf in a row flagged present is an error naming the rows and items; rows flagged missing
    are zeroed.

    Parameters
    ----------
    lazy : bool, optional
        Return a :class:`LazyEmbeddingTable` (the same checks, made chunk by chunk, without copying
        the vectors into memory). Default: when an array is memory-mapped or larger than
        :data:`LAZY_ELEMENTS`.
    empty : {"zero", "warn", "error"}
        Rows whose every modality is masked (no usable title nor image) are all zeros. ``"zero"``
        accepts them silently (prediction: the caller reports them); ``"warn"`` emits an
        :class:`EmptyRowsWarning` naming the rows and items (training: they teach only the class
        prior); ``"error"`` raises ``ValueError`` naming them.
    """
    if empty not in EMPTY_ROW_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_ROW_POLICIES}, not {empty!r}")
    if isinstance(emb, (np.ndarray, torch.Tensor)):
        text, image, tmask, imask, ids = emb, None, None, None, None
    elif hasattr(emb, "text") and hasattr(emb, "image"):
        text, image = emb.text, emb.image
        tmask, imask = getattr(emb, "text_mask", None), getattr(emb, "image_mask", None)
        ids = getattr(emb, "item_ids", None)
    else:
        raise TypeError(f"{what} must be an Embeddings table (sk.encode_catalog) or an (N, d) array, "
                        f"not {type(emb).__name__}")
    if text is None and image is None:
        raise ValueError(f"{what} has neither text nor image embeddings")
    if lazy is None:
        lazy = any(isinstance(x, np.memmap) or getattr(x, "lazy", False)    # a store view (StoreRows)
                   or (x is not None and not torch.is_tensor(x) and hasattr(x, "shape")
                       and int(np.prod(x.shape)) > LAZY_ELEMENTS) for x in (text, image))
    if lazy:
        return _check_empty(_lazy_table(text, image, tmask, imask, ids, what), what, empty)
    arrays = {}
    n = None
    for name, x in (("text", text), ("image", image)):
        if x is None:
            continue
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().cpu()
        if x.ndim != 2:
            raise ValueError(f"{what}.{name} must be a 2-D (N, d) array; got shape {tuple(x.shape)}")
        if n is not None and x.shape[0] != n:
            raise ValueError(f"{what}: text has {n} rows but image has {x.shape[0]}; one row per product")
        n = x.shape[0]
        arrays[name] = x.float().contiguous()
    if ids is not None:
        ids = np.asarray(ids)
        if len(ids) != n:
            raise ValueError(f"{what}: {len(ids)} item_ids but {n} embedding rows")
    masks = {}
    for name, m in (("text", tmask), ("image", imask)):
        if name not in arrays:
            masks[name] = torch.zeros(n, dtype=torch.bool)
            continue
        m = torch.ones(n, dtype=torch.bool) if m is None else torch.as_tensor(np.asarray(m)).bool()
        if m.shape != (n,):
            raise ValueError(f"{what}.{name}_mask has shape {tuple(m.shape)}; expected ({n},)")
        x = arrays[name]
        finite = np.isfinite(x.numpy()).all(1)       # numpy: one vectorised pass (torch's is four)
        bad = np.flatnonzero(m.numpy() & ~finite)
        if len(bad):
            raise ValueError(f"{what}.{name} has NaN or infinite values at {rows_desc(bad, ids)}; re-encode those "
                             f"items or mark them missing ({name}_mask=False)")
        missing = torch.nonzero(~m).squeeze(1)         # missing rows -> 0 (a copy: the caller's array untouched)
        arrays[name] = x.index_fill(0, missing, 0) if len(missing) else x.clone()
        masks[name] = m
    return _check_empty(EmbeddingTable(arrays.get("text"), arrays.get("image"), masks["text"], masks["image"], ids),
                        what, empty)


def _check_empty(table, what: str, empty: str):
    n = len(table)
    if empty != "zero" and n:
        none = np.flatnonzero((~(table.text_mask | table.image_mask)).numpy())
        if len(none):
            msg = (f"{what}: {len(none)} of {n} row(s) have no usable modality (every mask False: no title "
                   f"embedding and no image embedding): {rows_desc(none, table.item_ids)}; they are all-zero inputs. "
                   "Drop them (emb.take(np.flatnonzero(emb.text_mask | emb.image_mask))) or fix their title/image "
                   "(see emb.failures)")
            if empty == "error":
                raise ValueError(msg)
            import warnings

            warnings.warn(msg + "; training on them teaches only the class prior", EmptyRowsWarning, stacklevel=4)
    return table


def _lazy_table(text, image, tmask, imask, ids, what: str, chunk: int = 65536) -> LazyEmbeddingTable:
    n = None
    for name, x in (("text", text), ("image", image)):
        if x is None:
            continue
        if len(x.shape) != 2:
            raise ValueError(f"{what}.{name} must be a 2-D (N, d) array; got shape {tuple(x.shape)}")
        if n is not None and x.shape[0] != n:
            raise ValueError(f"{what}: text has {n} rows but image has {x.shape[0]}; one row per product")
        n = x.shape[0]
    if ids is not None:
        ids = np.asarray(ids)
        if len(ids) != n:
            raise ValueError(f"{what}: {len(ids)} item_ids but {n} embedding rows")
    masks = {}
    for name, x, m in (("text", text, tmask), ("image", image, imask)):
        if x is None:
            masks[name] = torch.zeros(n, dtype=torch.bool)
            continue
        m = torch.ones(n, dtype=torch.bool) if m is None else torch.as_tensor(np.asarray(m)).bool()
        if m.shape != (n,):
            raise ValueError(f"{what}.{name}_mask has shape {tuple(m.shape)}; expected ({n},)")
        bad = []
        for a in range(0, n, chunk):            # one streaming pass: memory bounded by the chunk
            fin = np.isfinite(np.asarray(x[a:a + chunk])).all(1)
            bad.extend((a + np.flatnonzero(m[a:a + chunk].numpy() & ~fin)).tolist())
        if bad:
            raise ValueError(f"{what}.{name} has NaN or infinite values at {rows_desc(np.array(bad), ids)}; re-encode "
                             f"those items or mark them missing ({name}_mask=False)")
        masks[name] = m
    return LazyEmbeddingTable(text, image, masks["text"], masks["image"], ids)


# ------------------------------------------------------------------------------------ item ids


def compact_ids(ids) -> np.ndarray:
    """Item ids as one fixed-width numpy unicode array (``<U{longest}``): no Python object per id.

    An array already of a unicode dtype is returned as is (no copy); anything else is converted
    once (``str`` of each value).
    """
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
        return ids
    if hasattr(ids, "to_numpy") and not isinstance(ids, np.ndarray):   # pandas / pyarrow
        try:
            ids = ids.to_numpy(zero_copy_only=False)
        except TypeError:
            ids = ids.to_numpy()
    a = np.asarray(ids)
    if a.dtype.kind == "U":
        return a
    u = a.astype(str)
    if a.dtype == object and len(a):    # numpy drops trailing NULs of a '<U' string: never quietly
        lost = np.flatnonzero(np.fromiter(map(len, map(str, a.ravel())), dtype=np.int64, count=a.size)
                              != np.char.str_len(u).ravel())
        if lost.size:
            raise ValueError(f"item id {str(a.ravel()[lost[0]])!r} (position {int(lost[0])}; {lost.size} such id(s)) "
                             "ends in a NUL character, which would be dropped and could merge it with another "
                             "id; remove the NUL characters from the ids")
    return u


def check_id_values(ids, *, where: str, row0: int = 0, row_word: str = "row") -> None:
    """Refuse ids that could not be kept verbatim: a NUL character (numpy's text arrays drop a
    trailing one, so ``"7\\x00"`` would become ``"7"``). Ids are otherwise never changed: surrounding
    spaces are kept. ``ValueError`` naming ``where``, the rows (``row0`` + position) and the fix."""
    s = pd.Series(np.asarray(ids, dtype=object))
    bad = np.flatnonzero(s.astype(str).str.contains("\x00", regex=False).to_numpy(dtype=bool))
    if bad.size:
        raise ValueError(f"{where}: {bad.size} id(s) contain a NUL character ({row_word}s "
                         f"{[row0 + int(k) for k in bad[:10]]}, e.g. {s.iloc[int(bad[0])]!r}), which would be "
                         "dropped and could merge two items; remove the NUL characters from the ids")


def id_hashes(ids, chunk: int = 65536) -> np.ndarray:
    """64-bit hash of each id (uint64): ``pandas.util.hash_array`` (SipHash of the string), in chunks.

    Equal ids give equal hashes whatever the width of the ``<U`` array holding them; different ids
    collide with probability ~2^-64 per pair. Only ``chunk`` ids at a time become Python strings.
    """
    a = compact_ids(ids)
    h = np.empty(len(a), dtype=np.uint64)
    for s in range(0, len(a), chunk):
        h[s:s + chunk] = pd.util.hash_array(a[s:s + chunk].astype(object), categorize=False)
    return h


def duplicated_ids(ids) -> np.ndarray:
    """The ids that occur more than once (each once, in order of first occurrence), exactly.

    Vectorised: the 64-bit hashes are sorted (8 + 8 bytes an id; Python strings only a chunk at a time); only
    the few ids whose hash is shared are compared as strings, so a hash collision is never
    reported as a duplicate.
    """
    a = compact_ids(ids)
    if len(a) < 2:
        return a[:0]
    h = id_hashes(a)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    same = hs[1:] == hs[:-1]
    if not same.any():
        return a[:0]
    cand = np.zeros(len(a), dtype=bool)
    cand[order[1:][same]] = True
    cand[order[:-1][same]] = True
    pos = np.flatnonzero(cand)                       # few: exact check in pandas
    s = pd.Series(a[pos])                            # pos ascending: rows in catalog order
    return s[s.duplicated(keep=False)].drop_duplicates().to_numpy(dtype=a.dtype)


class DuplicateIdError(ValueError):
    """Item ids that occur more than once (``.ids``: the repeated ids, each once)."""

    def __init__(self, ids, message: str):
        super().__init__(message)
        self.ids = list(ids)


def check_unique_ids(ids, *, where: str = "the catalog", column: str = "item_id", seen=None, row0: int = 0,
                     row_word: str = "row", hint: str = "drop or rename the duplicates") -> np.ndarray:
    """The package's one rule for item ids: every id names one product, so none occurs twice.

    Checked within ``ids`` (:func:`duplicated_ids`: vectorised, exact) and, with ``seen`` (a
    :class:`~semcat_kit._core.seen_ids.SeenIds` of the earlier chunks of a stream), against every id
    seen before; the ids are then added to ``seen``.

    Parameters
    ----------
    where, column : str
        Named in the message (the file or object, and the id column).
    row0, row_word : int, str
        How the rows of the first repeated id are named: ``row0 + position`` (e.g. a file's line:
        ``row0 = first_row + 2``, ``row_word = "line"``).
    hint : str
        What to do, at the end of the message.

    Returns
    -------
    ndarray
        The ids as :func:`compact_ids`.

    Raises
    ------
    DuplicateIdError
        ``"<where>: column 'sku' repeats id '7' (lines [2, 4]); 3 repeated id(s) in all, e.g.
        [...]; ids must be unique (<hint>)"``.
    """
    a = compact_ids(ids)
    dup, earlier = duplicated_ids(a), False
    if not len(dup) and seen is not None:
        again = seen.add(a)
        dup, earlier = pd.unique(pd.Series(again)).astype(a.dtype) if len(again) else again, True
    if not len(dup):
        return a
    first = dup[0]
    rows = [row0 + int(i) for i in np.flatnonzero(a == first)[:10]]
    at = (f"{row_word}s {rows}" if len(rows) > 1 else f"{row_word} {rows[0]}") + (" and an earlier chunk" if earlier else "")
    raise DuplicateIdError(dup.tolist(), f"{where}: column {column!r} repeats id {str(first)!r} ({at}); "
                                         f"{len(dup)} repeated id(s) in all, e.g. {dup[:10].tolist()}; ids must "
                                         f"be unique ({hint})")
