"""Categorizing new products with an exported head: encoders + head + top-k (or CRM) decoding.

``Predictor.load(dir)`` loads a head written by :func:`semcat_kit.export_head` and the encoders it
was trained on (by their recorded names), refusing any encoder whose fingerprint or dimension
differs from the recorded one. ``predict(products)`` encodes titles and images (optionally through
the embedding cache), runs the head and returns one row per product. Products without a title or
without an image are predicted from what is present; an unreadable image is reported in the
``failures`` column (and ``result.attrs["failures"]``), never an exception.

At scale, ``predict_iter`` (products) and ``predict_embeddings_iter`` (already-encoded rows) yield
one result frame per chunk, keep only the top-k of each row and hold at most one chunk plus one
4,096-row scoring block of probabilities; :func:`write_predictions` streams the frames to CSV or
Parquet and renames the file into place when complete. Results do not depend on the chunk size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import pandas as pd
from .._core.progress import progress as progress_bar

from .._core.memory import bound_heap
from .._core.contracts import DuplicateIdError, as_k, check_unique_ids
from ..datasets.images import NO_IMAGE_PATH
from ..datasets.products import products_frame
from .._core.seen_ids import SeenIds
from .._core.chunks import DEFAULT_CHUNK_SIZE   # products scored at a time; memory ~ (chunk_size + 4,096) x C
from ..judge.decoding import crm_predict, topk
from ..judge.hedging import hedge, hedge_tree
from .export import ExportedHead, load_head

__all__ = ["Predictor", "write_predictions", "DuplicateIdError", "DEFAULT_CHUNK_SIZE", "MissingImagesWarning",
           "without_images_cost"]

#: Rows the head scores at once, at absolute row positions 0, B, 2B, ... in every path, so that
#: chunked and one-shot predictions are equal bit for bit (a matrix product's rounding can depend on
#: its row count).
_SCORE_BLOCK = 4096

_KEYS = {"text": "text_encoder", "image": "image_encoder"}
# reasons encode_catalog gives when a product simply has no title / no image: absence, not failure
_ABSENT = ("missing title", "empty title", NO_IMAGE_PATH)


class MissingImagesWarning(UserWarning):
    """A head that reads titles and images was given products without images: it predicts from the
    titles alone, less accurately (:func:`without_images_cost` says how much, where measured)."""


def without_images_cost(head) -> str:
    """What leaving out the images of a head trained on titles and images costs, in words: the test
    top-1 with and without images that ``semcat train`` measured on its test split (stored in the
    head's metadata), or a general statement for heads exported without that measurement."""
    meta = head.config.get("metadata") or {}
    enc = (head.encoder_meta.get("image_encoder") or {}).get("name")
    what = f"the head in {head.dir} was trained on titles and images (image encoder {enc!r})"
    full, blind = (meta.get("test_metrics") or {}).get("top1"), (meta.get("test_metrics_text_only") or {}).get("top1")
    if full is not None and blind is not None:
        n = (meta.get("test_metrics") or {}).get("n")
        on = f" on its {int(n)} test products" if n else " on its test split"
        return (f"{what}; from titles alone its top-1{on} was {blind:.3f} instead of {full:.3f} "
                f"({(blind - full) * 100:+.1f} points)")
    return f"{what}; from titles alone its predictions are less accurate (how much was not measured for this head)"


def _check_encoder(enc, modality: str, meta: dict | None, head_dim: int, where: Path) -> None:
    dim = enc.text_dim if modality == "text" else enc.image_dim
    if dim is None:
        raise ValueError(f"the {modality} encoder {enc.name!r} cannot encode {modality}s; the head in {where} needs "
                         f"a {modality} encoder" + (f" ({meta['name']!r})" if meta else ""))
    if meta is not None and enc.fingerprint != meta.get("fingerprint"):
        raise ValueError(f"{modality} encoder mismatch: the head in {where} was trained on {meta.get('name')!r} "
                         f"(fingerprint {meta.get('fingerprint')}) but the encoder in use is {enc.name!r} (fingerprint "
                         f"{enc.fingerprint}); use the recorded encoder or re-train the head on this one")
    if dim != head_dim:
        raise ValueError(f"{modality} encoder {enc.name!r} gives {dim}-d embeddings but the head in {where} expects "
                         f"{head_dim}-d {modality} embeddings (recorded encoder: "
                         f"{meta.get('name') if meta else 'unknown'}); use the recorded encoder")


class Predictor:
    """An exported head plus its encoders, predicting categories of new products.

    Build with :meth:`Predictor.load`.

    Attributes
    ----------
    head : ExportedHead
    taxonomy : Taxonomy
    classes, names : list of str
        Full path / short name of each class.
    text_encoder, image_encoder : Encoder or None
        Encoders of the modalities the head reads.
    failures : pandas.DataFrame
        ``item_id, modality, reason`` of the last :meth:`predict` / :meth:`predict_proba` call.
    """

    def __init__(self, head: ExportedHead, text_encoder=None, image_encoder=None):
        self.head = head
        self.text_encoder, self.image_encoder = text_encoder, image_encoder
        self.failures = pd.DataFrame(columns=["item_id", "modality", "reason"])

    @property
    def taxonomy(self):
        return self.head.taxonomy

    @property
    def classes(self) -> list[str]:
        return self.head.classes

    @property
    def names(self) -> list[str]:
        return self.head.names

    def __repr__(self) -> str:
        enc = [e.name for e in (self.text_encoder, self.image_encoder) if e is not None]
        return f"Predictor({self.head.n_classes} classes, backend={self.head.backend!r}, encoders={enc})"

    @classmethod
    def load(cls, dir, device: str = "auto", backend: str = "torch", text_encoder=None,
             image_encoder=None, expected_sha256: str | None = None) -> "Predictor":
        """Load an exported head and its encoders.

        Parameters
        ----------
        dir : str or Path
            Folder written by :func:`semcat_kit.export_head`.
        device : str
            ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
        backend : {"torch", "onnx", "pt2"}
            (``"torchscript"``: heads written by semcat_kit 0.1, see :func:`semcat_kit.load_head`)
        text_encoder, image_encoder : Encoder, optional
            Already-loaded encoders; by default those recorded in the export are loaded by name
            (``sk.encoders.load(name)``). Either way the fingerprint and dimension must match.
        expected_sha256 : str, optional
            sha256 of the head's ``config.json`` given by its author; see :func:`load_head`.

        Raises
        ------
        ValueError
            Encoder fingerprint or dimension mismatch (naming both fingerprints), missing or
            corrupted files, inconsistent labels (see :func:`load_head`).
        """
        from ..encode import encoders as _encoders

        dir = Path(dir)
        head = load_head(dir, backend=backend, device="cpu" if backend == "onnx" else device,
                         expected_sha256=expected_sha256)
        arch = head.config["architecture"]
        given = {"text": text_encoder, "image": image_encoder}
        used = {}
        for modality in head.uses:
            meta = head.encoder_meta.get(_KEYS[modality])
            enc = given[modality]
            if enc is None:
                if meta is None or not meta.get("name"):
                    raise ValueError(f"the head in {dir} reads {modality} embeddings but its config.json records no "
                                     f"{modality} encoder; pass {_KEYS[modality]}=... to Predictor.load")
                try:
                    enc = _encoders.load(meta["name"], device=device)
                except (KeyError, OSError, ValueError, ImportError, RuntimeError) as e:
                    msg = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
                    raise ValueError(f"the head in {dir} records {modality} encoder {meta['name']!r}, which cannot "
                                     f"be loaded here ({type(e).__name__}: {msg}); make it available (install, "
                                     f"register or copy its checkpoint) or pass {_KEYS[modality]}=... to "
                                     "Predictor.load") from e
            _check_encoder(enc, modality, meta, arch[f"{modality}_dim"], dir)
            used[modality] = enc
        return cls(head, used.get("text"), used.get("image"))

    @classmethod
    def from_pretrained(cls, name_or_path, device: str = "auto", backend: str = "torch", text_encoder=None,
                        image_encoder=None, expected_sha256: str | None = None, *, revision: str | None = None,
                        cache_dir=None, local_files_only: bool = False) -> "Predictor":
        """:meth:`load` of a local head folder or a Hugging Face Hub repo id (``"owner/name"``).

        The network is used only for a repo id whose snapshot is not cached (see
        :func:`semcat_kit.ship.export.resolve_pretrained`); the encoders are loaded by name as in
        :meth:`load`.
        """
        from .export import resolve_pretrained

        path = resolve_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                                  local_files_only=local_files_only)
        return cls.load(path, device=device, backend=backend, text_encoder=text_encoder,
                        image_encoder=image_encoder, expected_sha256=expected_sha256)

    def save_pretrained(self, dir, overwrite: bool = False) -> Path:
        """Copy the head's folder to ``dir`` (:meth:`ExportedHead.save_pretrained`)."""
        return self.head.save_pretrained(dir, overwrite=overwrite)

    # ------------------------------------------------------------------ encoding
    def embed(self, products, cache_dir=None, batch_size: int = 64, progress: bool = True):
        """Encode products with the head's encoders.

        Returns
        -------
        Embeddings
            Rows in input order (``item_id`` = the ``item_id`` column or the row index).
        """
        return self._embed_frame(products_frame(products), cache_dir, batch_size, progress)

    def _embed_frame(self, df: pd.DataFrame, cache_dir, batch_size: int, progress: bool):
        """:meth:`embed` of a frame already checked by ``products_frame``."""
        from ..encode.embeddings import Embeddings
        from ..encode.encode import encode_catalog

        cols = {"text": "title", "image": "image_path"}
        if not any(cols[m] in df.columns for m in self.head.uses):
            needs = " or ".join(f"'{cols[m]}'" for m in self.head.uses)
            raise ValueError(f"this head reads {' and '.join(self.head.uses)}, but the products have no {needs} "
                             f"column (columns: {list(df.columns)})")
        for modality in self.head.uses:
            if cols[modality] not in df.columns:
                if modality == "image" and len(df):
                    import warnings

                    warnings.warn(f"the products have no image column ('image_path' or 'image'): "
                                  f"{without_images_cost(self.head)}. Give each product's image file to use it",
                                  MissingImagesWarning, stacklevel=4)
                df[cols[modality]] = None      # the head reads this modality; every product lacks it
        if len(df) == 0:
            return Embeddings(np.array([], dtype=str), None, None, np.zeros(0, bool), np.zeros(0, bool))
        return encode_catalog(df, text_encoder=self.text_encoder, image_encoder=self.image_encoder,
                              cache_dir=cache_dir, batch_size=batch_size, progress=progress)


    def _encode_frame(self, df: pd.DataFrame, cache_dir, batch_size, progress):
        """Embeddings, usable mask and failures (in row order) of a checked products frame."""
        return self._usable(self._embed_frame(df, cache_dir, batch_size, progress))

    def _usable(self, emb):
        """``(emb, usable, failures)``: rows with a modality the head reads, and the failures worth
        reporting (absent titles/images are not failures; rows with nothing usable are)."""
        fails = emb.failures
        fails = fails[~fails["reason"].isin(_ABSENT)].reset_index(drop=True)
        usable = np.zeros(len(emb), dtype=bool)
        if "text" in self.head.uses:
            usable |= emb.text_mask
        if "image" in self.head.uses:
            usable |= emb.image_mask
        nothing = emb.item_ids[~usable]
        if len(nothing):
            fails = pd.concat([fails, pd.DataFrame({"item_id": nothing, "modality": "all",
                                                    "reason": "no usable title or image: not predicted"})],
                              ignore_index=True)
        pos = pd.Series(np.arange(len(emb)), index=emb.item_ids)
        fails = fails.iloc[np.argsort(pos.reindex(fails["item_id"].astype(str)).to_numpy(), kind="stable")]
        return emb, usable, fails.reset_index(drop=True)

    def _score(self, emb) -> np.ndarray:
        if len(emb) == 0:
            return np.zeros((0, self.head.n_classes), dtype=np.float32)
        return self.head.predict_proba(emb, batch_size=_SCORE_BLOCK)

    def predict_proba(self, products, cache_dir=None, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """(N, C) float32 class probabilities in input order; NaN rows for products with no usable
        title or image (listed in :attr:`failures`).

        This is a dense (N, C) array: for many products use :meth:`predict_iter` (top-k per row,
        memory bounded by the chunk)."""
        emb, usable, fails = self._encode_frame(products_frame(products), cache_dir, batch_size, progress)
        probs = self._score(emb)
        probs[~usable] = np.nan
        self.failures = fails
        return probs

    def predict(self, products, top_k: int = 5, crm: bool = False, cache_dir=None, batch_size: int = 64,
                progress: bool = True, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
                precision: float | None = None) -> pd.DataFrame:
        """Top-k categories of each product.

        Parameters
        ----------
        products : DataFrame, list of dict, or iterable of DataFrames
            ``title`` and/or ``image_path`` (or ``image``: a file path); ``item_id`` optional
            (the row index is used otherwise). An iterable of DataFrames is read one frame at a
            time, e.g. ``(df for df, _ in sk.datasets.read_csv_chunks(path, 10_000))``.
        top_k : int
            Number of ranked categories per product (capped at the class count).
        crm : bool
            Rank by least expected tree distance (:func:`semcat_kit.judge.decoding.crm_predict`) instead
            of probability; adds ``exp_dist_1..k``.
        cache_dir : path, optional
            Embedding cache (see :func:`semcat_kit.encode_catalog`).
        batch_size : int
            Encoder batch size.
        progress : bool
            ``tqdm`` progress bars.
        chunk_size : int or None
            Products encoded and scored at a time: working memory is O(chunk_size x C), never
            O(N x C); only the top-k of each row is kept. None: all at once. The result does not
            depend on it (see :meth:`predict_iter`).
        precision : float, optional
            Also give each product its **hedged** prediction: the most specific taxonomy node at the
            threshold calibrated for this precision (one of :attr:`hedging`'s, e.g. 0.98; the head
            must have been exported with ``hedging=``), where precision means "the true class lies
            under the node" (:mod:`semcat_kit.judge.hedging`). Adds ``node`` (full path; ``""`` is the
            root), ``node_depth``, ``node_prob``, ``is_leaf`` (a single class) and ``needs_review``
            (the root, or a node probability below the calibration's floor; also every product with
            nothing usable).

        Returns
        -------
        pandas.DataFrame
            One row per product in input order: ``item_id``, ``pred_1..k`` (full paths),
            ``name_1..k`` (short names), ``prob_1..k``, (``exp_dist_1..k``), (the hedged columns),
            ``used`` (the modalities the prediction used: ``"text+image"``, ``"text"``, ``"image"``
            or ``""``) and ``failures`` (``"; "``-joined reasons, ``""`` when none). Products with
            nothing usable have empty predictions. ``attrs["failures"]`` is the failures table.

        Raises
        ------
        ValueError
            ``precision`` is given but the head carries no calibrated thresholds, or none for
            that precision (the message lists the calibrated ones).
        """
        parts = list(self.predict_iter(products, top_k=top_k, crm=crm, cache_dir=cache_dir, batch_size=batch_size,
                                       progress=progress, chunk_size=chunk_size, precision=precision))
        df = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        df.attrs["failures"] = self.failures.copy()
        return df

    def predict_iter(self, products, top_k: int = 5, crm: bool = False, cache_dir=None, batch_size: int = 64,
                     progress: bool = True, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
                     precision: float | None = None) -> Iterator[pd.DataFrame]:
        """:meth:`predict`, one chunk of products at a time: yields one result DataFrame per chunk.

        Memory is bounded by the chunk, not by the number of products: one (chunk_size + 4,096, C)
        block of probabilities at most, and only the top-k of each row is kept. Feed it
        the frames of ``sk.datasets.read_csv_chunks(path, n)`` and write each frame out with
        :func:`write_predictions`. The concatenated frames equal :meth:`predict` with
        ``chunk_size=None`` bit for bit, whatever the chunk size: the head scores rows in blocks of
        4,096 at the same absolute positions in both (a block may span chunks; a chunk is yielded
        once all its rows are scored).

        Ids must be unique over the whole input (checked across chunks). Each frame's ``failures``
        column names its rows' failures; :attr:`failures` holds the whole table once the iteration
        ends. The frames carry no ``attrs`` (so ``pd.concat`` of them just works).
        Empty input yields one empty frame with the result columns.
        """
        bound_heap()      # chunk temporaries mapped on their own: memory stays flat (see _memory)
        top_k = as_k(top_k, "top_k")
        dec = _Decode(bool(crm), self._hedge_spec(precision))
        if crm:
            self._flag_crm()
        if chunk_size is not None:
            chunk_size = as_k(chunk_size, "chunk_size")
        chunks, total = _chunked(products, chunk_size)
        one = total is not None and (chunk_size is None or total <= chunk_size)
        seen = SeenIds()

        def encoded():
            for raw, checked in chunks:
                df = raw if checked else products_frame(raw)
                if not checked:
                    check_unique_ids(df["item_id"], where="the products", seen=seen)
                if len(df):
                    yield self._encode_frame(df, cache_dir, batch_size, progress and one)

        def empty():
            return self._encode_frame(products_frame(pd.DataFrame({"item_id": [], "title": []})), None, 1, False)
        return self._rank_chunks(encoded(), empty, top_k, dec, total, progress and not one)

    def predict_embeddings_iter(self, embeddings, top_k: int = 5, crm: bool = False, progress: bool = True,
                                chunk_size: int | None = DEFAULT_CHUNK_SIZE,
                                precision: float | None = None) -> Iterator[pd.DataFrame]:
        """:meth:`predict_iter` for products already encoded with the head's encoders.

        Parameters
        ----------
        embeddings : Embeddings or iterable of Embeddings
            E.g. rows of an embedding store, chunk by chunk; one ``Embeddings`` is cut into
            ``chunk_size`` rows. Their ``meta`` must name the head's encoders (or none).
        top_k, crm, progress, chunk_size, precision
            As in :meth:`predict_iter`.

        Yields
        ------
        pandas.DataFrame
            The columns of :meth:`predict`, one frame per chunk; ``used`` follows the masks and
            ``failures`` the embeddings' ``failures`` table.
        """
        bound_heap()      # chunk temporaries mapped on their own: memory stays flat (see _memory)
        from ..encode.embeddings import Embeddings

        top_k = as_k(top_k, "top_k")
        dec = _Decode(bool(crm), self._hedge_spec(precision))
        if crm:
            self._flag_crm()
        if chunk_size is not None:
            chunk_size = as_k(chunk_size, "chunk_size")
        total = None
        if isinstance(embeddings, Embeddings):
            total = len(embeddings)
            step = chunk_size or max(total, 1)
            parts = (embeddings.take(np.arange(a, min(total, a + step))) for a in range(0, total, step))
        elif hasattr(embeddings, "__iter__"):
            parts = iter(embeddings)
        else:
            raise TypeError(f"embeddings must be an Embeddings or an iterable of Embeddings, not "
                            f"{type(embeddings).__name__}")
        seen = SeenIds()

        def encoded():
            for i, emb in enumerate(parts):
                if not isinstance(emb, Embeddings):
                    raise TypeError(f"chunk {i} of embeddings is a {type(emb).__name__}, not an Embeddings")
                self.head.check_embeddings_meta(emb.meta)
                if total is None:
                    check_unique_ids(emb.item_ids, where="the embeddings", seen=seen)
                if len(emb):
                    yield self._usable(emb)

        def empty():
            return self._usable(Embeddings(np.array([], dtype=str), None, None, np.zeros(0, bool), np.zeros(0, bool)))
        one = total is not None and (chunk_size is None or total <= chunk_size)
        return self._rank_chunks(encoded(), empty, top_k, dec, total, progress and not one)

    def crm_trust(self):
        """``semcat train``'s verdict on CRM for this head (:func:`semcat_kit.judge.decoding.crm_trust` of its
        validation probabilities), or None when the head records none."""
        from ..judge.decoding import CrmTrust

        t = (self.head.config.get("metadata") or {}).get("crm_trust")
        return None if not t else CrmTrust(bool(t["ok"]), float(t["confidence"]), float(t["threshold"]))

    def _flag_crm(self) -> None:
        import warnings

        from ..judge.decoding import CrmFlagWarning

        t = self.crm_trust()
        if t is not None and not t.ok:
            warnings.warn(f"crm=True on the head in {self.head.dir}: {t.reason}", CrmFlagWarning, stacklevel=4)

    @property
    def hedging(self):
        """The head's calibrated hedging thresholds (:class:`semcat_kit.HedgeCalibration`), or None."""
        return self.head.hedging

    def _hedge_spec(self, precision) -> tuple | None:
        """``(threshold, rule, floor, temperature)`` calibrated for ``precision``, or None when not asked for."""
        if precision is None:
            return None
        if self.head.hedging is None:
            raise ValueError(f"precision={precision!r} asks for hedged predictions, but the head in {self.head.dir} "
                             "carries no calibrated thresholds; re-export it with sk.export_head(run, dir, "
                             "hedging=(val_embeddings, val_labels)) (semcat train does this when there is a "
                             "validation split)")
        cal = self.head.hedging
        return cal.threshold(precision), cal.rule, cal.floor, cal.temperature(precision)

    def _rank_chunks(self, encoded, empty, top_k: int, dec: "_Decode", total, progress: bool) -> Iterator[pd.DataFrame]:
        """Score and rank encoded chunks ``(emb, usable, fails)``; yields one frame per chunk.

        Rows are scored in blocks of ``_SCORE_BLOCK`` at absolute positions 0, B, 2B, ... whatever
        the chunks are (a one-shot call scores the same blocks), so the result does not depend on
        the chunking; a chunk is ranked and yielded once all its rows are scored."""
        self.failures = pd.DataFrame(columns=["item_id", "modality", "reason"])
        bar = progress_bar(total=total, unit="item", desc="predict", disable=not progress, leave=False)
        all_fails = []
        pending: list[_Pending] = []
        queued = 0                                    # rows encoded but not scored yet
        emitted = False
        try:
            for emb, usable, fails in encoded:
                all_fails.append(fails)
                pending.append(_Pending(emb, usable, fails))
                queued += len(emb)
                while queued >= _SCORE_BLOCK:
                    self._score_queued(pending, _SCORE_BLOCK, top_k, dec)
                    queued -= _SCORE_BLOCK
                while pending and pending[0].done:
                    item = pending.pop(0)
                    bar.update(len(item.emb))
                    emitted = True
                    yield self._predict_frame(item.emb, item.ranked(), item.usable, item.fails, dec)
            if queued:
                self._score_queued(pending, queued, top_k, dec)
            for item in pending:
                bar.update(len(item.emb))
                emitted = True
                yield self._predict_frame(item.emb, item.ranked(), item.usable, item.fails, dec)
            pending = []
            if not emitted:
                emb, usable, fails = empty()
                yield self._predict_frame(emb, self._rank_rows(self._score(emb), usable, top_k, dec), usable, fails, dec)
        finally:
            bar.close()
            if all_fails:
                full = [f for f in all_fails if len(f)]
                self.failures = (all_fails[0] if not full else full[0] if len(full) == 1
                                 else pd.concat(full, ignore_index=True))

    def _score_queued(self, pending: list["_Pending"], n: int, top_k: int, dec: "_Decode") -> None:
        """Score the next ``n`` unscored rows of the pending chunks as one block and keep only their
        top-k (the block's (n, C) probabilities are dropped here)."""
        parts, left = [], n
        for item in pending:
            if left == 0:
                break
            take = min(left, len(item.emb) - item.n_scored)
            if take > 0:
                parts.append((item, item.n_scored, take))
                left -= take
        embs = [it.emb if (a == 0 and t == len(it.emb)) else it.emb.take(np.arange(a, a + t)) for it, a, t in parts]
        probs = self._score(embs[0] if len(embs) == 1 else _concat_embeddings(embs))
        off = 0
        for it, a, t in parts:
            it.parts.append(self._rank_rows(probs[off:off + t], it.usable[a:a + t], top_k, dec))
            it.n_scored += t
            off += t

    def _rank_rows(self, probs: np.ndarray, usable: np.ndarray, top_k: int, dec: "_Decode"):
        """``(idx, p, cost, hedged)`` of rows of probabilities: (n, k) top-k (or CRM) classes, their
        probabilities (NaN where nothing was usable), CRM expected distances (or None), and the hedged
        ``(node, prob)`` of each row (hedge node ids, -1 / NaN where nothing was usable; or None)."""
        n, C = probs.shape
        k = min(int(top_k), C)
        idx = np.zeros((n, k), dtype=np.int64)
        cost = np.full((n, k), np.nan) if dec.crm else None
        hedged = (np.full(n, -1, dtype=np.int64), np.full(n, np.nan)) if dec.hedge is not None else None
        ok = np.flatnonzero(usable)
        if len(ok):
            sub = probs if len(ok) == n else probs[ok]
            if dec.crm:
                idx_ok, cost_ok = crm_predict(sub, self.taxonomy, top_k=k)
                cost[ok] = cost_ok
            else:
                idx_ok = topk(sub, k)
            idx[ok] = idx_ok
            if hedged is not None:
                lam, rule, floor, temperature = dec.hedge
                h = hedge(sub, self.taxonomy, lam, rule=rule, floor=floor, temperature=temperature)
                hedged[0][ok], hedged[1][ok] = h.node, h.prob
        p = np.take_along_axis(probs, idx, axis=1).astype(np.float64) if n else np.zeros((0, k))
        p[~usable] = np.nan
        return idx, p, cost, hedged

    def _predict_frame(self, emb, ranked, usable: np.ndarray, fails: pd.DataFrame, dec: "_Decode") -> pd.DataFrame:
        """Result frame of one chunk from its ranked rows ``(idx, p, cost, hedged)``."""
        idx, p, cost, hedged = ranked
        n, k = idx.shape
        classes, names = np.asarray(self.classes, dtype=object), np.asarray(self.names, dtype=object)
        out = {"item_id": emb.item_ids}
        for j in range(k):
            out[f"pred_{j + 1}"] = np.where(usable, classes[idx[:, j]], None)
        for j in range(k):
            out[f"name_{j + 1}"] = np.where(usable, names[idx[:, j]], None)
        for j in range(k):
            out[f"prob_{j + 1}"] = p[:, j]
        if dec.crm:
            for j in range(k):
                out[f"exp_dist_{j + 1}"] = cost[:, j]
        if hedged is not None:
            out.update(self._hedged_columns(*hedged, dec.hedge[2]))
        used_text = emb.text_mask if "text" in self.head.uses else np.zeros(n, dtype=bool)
        used_image = emb.image_mask if "image" in self.head.uses else np.zeros(n, dtype=bool)
        out["used"] = np.select([used_text & used_image, used_text, used_image], ["text+image", "text", "image"],
                                "").astype(object)
        reasons = fails.groupby("item_id", sort=False).apply(
            lambda g: "; ".join(failure_text(m, r) for m, r in zip(g["modality"], g["reason"])),
            include_groups=False) if len(fails) else pd.Series(dtype=str)
        out["failures"] = [reasons.get(i, "") for i in emb.item_ids]
        return pd.DataFrame(out)

    def _hedged_columns(self, node: np.ndarray, prob: np.ndarray, floor: float) -> dict:
        """``node, node_depth, node_prob, is_leaf, needs_review`` from hedge ids (-1: nothing usable)."""
        tree = hedge_tree(self.taxonomy)
        ok = node >= 0
        safe = np.where(ok, node, 0)
        return {"node": np.where(ok, np.asarray(tree.paths, dtype=object)[safe], None),
                "node_depth": pd.arrays.IntegerArray(tree.depth[safe].astype(np.int64), ~ok),
                "node_prob": prob,
                "is_leaf": ok & (node >= tree.n_inner),
                "needs_review": ~ok | (node == 0) | (prob < floor)}


def failure_text(modality: str, reason: str) -> str:
    """A failure as predictions and ``semcat predict`` show it: ``"image file missing: <path>"`` (the
    reason names its modality already), else ``"<modality>: <reason>"``."""
    return reason if str(reason).startswith(modality) else f"{modality}: {reason}"


class _Pending:
    """An encoded chunk waiting for (part of) its scores; holds the top-k of its scored rows."""

    def __init__(self, emb, usable, fails):
        self.emb, self.usable, self.fails, self.parts, self.n_scored = emb, usable, fails, [], 0

    @property
    def done(self) -> bool:
        return self.n_scored == len(self.emb)

    def ranked(self):
        """``(idx, p, cost, hedged)`` of all its rows."""
        if len(self.parts) == 1:
            return self.parts[0]
        idx, p, cost, hedged = zip(*self.parts)
        return (np.concatenate(idx), np.concatenate(p), None if cost[0] is None else np.concatenate(cost),
                None if hedged[0] is None else tuple(np.concatenate(x) for x in zip(*hedged)))


class _Decode(NamedTuple):
    """How rows are decoded: CRM ranking or not, and the hedging ``(threshold, rule, floor)`` or None."""

    crm: bool
    hedge: tuple | None = None


def _concat_embeddings(parts):
    """Row-wise concatenation of Embeddings of the same encoders (meta of the first)."""
    from ..encode.embeddings import Embeddings

    def cat(name):
        arrs = [getattr(e, name) for e in parts]
        return None if arrs[0] is None else np.concatenate(arrs)
    return Embeddings(np.concatenate([e.item_ids for e in parts]), cat("text"), cat("image"), cat("text_mask"),
                      cat("image_mask"), meta=parts[0].meta)


# ---------------------------------------------------------------------------------- chunks
def _chunked(products, chunk_size: int | None):
    """``(iterator of (frame, checked), total or None)``: a DataFrame / list of dicts is checked
    once as a whole (ids unique over all rows) and sliced; an iterable of frames is checked frame by
    frame (ids checked across frames by the caller)."""
    if isinstance(products, (pd.DataFrame, list, tuple)):
        df = products_frame(products)
        n = len(df)
        step = n if chunk_size is None else chunk_size

        def slices():
            if n == 0:
                yield df, True
            for a in range(0, n, max(step, 1)):
                yield df.iloc[a:a + step].reset_index(drop=True), True
        return slices(), n
    if isinstance(products, (str, bytes, dict)) or not hasattr(products, "__iter__"):
        raise TypeError(f"products must be a DataFrame, a list of dicts or an iterable of DataFrames, not "
                        f"{type(products).__name__}")

    def frames():
        for i, part in enumerate(products):
            if not isinstance(part, pd.DataFrame):
                raise TypeError(f"chunk {i} of products is a {type(part).__name__}; an iterable of products must "
                                "yield DataFrames")
            if chunk_size is None or len(part) <= chunk_size:
                yield part, False
            else:
                for a in range(0, len(part), chunk_size):
                    yield part.iloc[a:a + chunk_size], False
    return frames(), None


# ---------------------------------------------------------------------------------- writing
PARQUET_SUFFIXES = (".parquet", ".pq")


def _is_parquet(path) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def _parquet_schema(columns):
    import pyarrow as pa

    def kind(c: str):
        if c.startswith(("prob_", "exp_dist_")) or c == "node_prob":
            return pa.float64()
        if c == "node_depth":
            return pa.int64()
        if c in ("is_leaf", "needs_review"):
            return pa.bool_()
        return pa.string()
    return pa.schema([(c, kind(c)) for c in columns])


def write_predictions(frames: Iterable[pd.DataFrame], path, *, fmt: str | None = None) -> int:
    """Write prediction frames (e.g. :meth:`Predictor.predict_iter`) to one file as they come.

    The file is written to a temporary file beside ``path`` and renamed over it only when every
    frame is written (an error or an interrupt leaves ``path`` untouched). Memory holds one frame.

    Parameters
    ----------
    frames : iterable of DataFrame
        Same columns in each frame (the first frame's columns define the file).
    path : str or Path
        Output file; Parquet (pyarrow, one row group per frame) when it ends in ``.parquet`` /
        ``.pq`` or ``fmt="parquet"``, CSV otherwise (``pandas.DataFrame.to_csv``, ``index=False``;
        the same bytes as writing the concatenated frame at once).
    fmt : {"csv", "parquet"}, optional

    Returns
    -------
    int
        Rows written.
    """
    from .._core.io import atomic_path, umask

    if fmt is None:
        fmt = "parquet" if _is_parquet(path) else "csv"
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    path = Path(path).expanduser()
    n, n_frames, columns = 0, 0, None
    with atomic_path(path, suffix=".parquet" if fmt == "parquet" else ".csv") as tmp:
        writer = None
        try:
            if fmt == "csv":
                writer = open(tmp, "w", encoding="utf-8", newline="")
            for df in frames:
                if columns is None:
                    columns = list(df.columns)
                    if fmt == "parquet":
                        import pyarrow.parquet as pq

                        writer = pq.ParquetWriter(tmp, _parquet_schema(columns))
                elif list(df.columns) != columns:
                    raise ValueError(f"prediction frame {n_frames} has columns {list(df.columns)}, the first had "
                                     f"{columns}; every frame must have the same columns")
                if fmt == "csv":
                    df.to_csv(writer, index=False, header=n_frames == 0)
                else:
                    import pyarrow as pa

                    writer.write_table(pa.Table.from_pandas(df, schema=writer.schema, preserve_index=False))
                n += len(df)
                n_frames += 1
            if columns is None:
                raise ValueError(f"nothing to write to {path}: no prediction frames were given")
        finally:
            if writer is not None:
                writer.close()
        os.chmod(tmp, 0o666 & ~umask())     # the temporary file is private (0600); the output is not
    return n
