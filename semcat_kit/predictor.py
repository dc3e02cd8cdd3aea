"""Categorizing new products with an exported head: encoders + head + top-k (or CRM) decoding.

``Predictor.load(dir)`` loads a head written by :func:`semcat_kit.export_head` and the encoders it
was trained on (by their recorded names), refusing any encoder whose fingerprint or dimension
differs from the recorded one. ``predict(products)`` encodes titles and images (optionally through
the embedding cache), runs the head and returns one row per product. Products without a title or
without an image are predicted from what is present; an unreadable image is reported in the
``failures`` column (and ``result.attrs["failures"]``), never an exception.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .contracts import as_k
from .decoding import crm_predict, topk
from .export import ExportedHead, load_head

__all__ = ["Predictor"]

_KEYS = {"text": "text_encoder", "image": "image_encoder"}
# reasons encode_catalog gives when a product simply has no title / no image: absence, not failure
_ABSENT = ("missing title", "empty title", "no image path")


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


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())


def _products_frame(products) -> pd.DataFrame:
    """DataFrame / list of dicts -> ``item_id, title, image_path`` (title / image_path may be absent)."""
    if isinstance(products, pd.DataFrame):
        df = products
    elif isinstance(products, (list, tuple)):
        if products and not all(isinstance(p, dict) for p in products):
            bad = next(i for i, p in enumerate(products) if not isinstance(p, dict))
            raise TypeError(f"products[{bad}] is a {type(products[bad]).__name__}; give a DataFrame or a list of "
                            "dicts with 'title' and/or 'image_path' (or 'image')")
        df = pd.DataFrame(list(products))
    else:
        raise TypeError(f"products must be a DataFrame or a list of dicts, not {type(products).__name__}")
    cols = [str(c) for c in df.columns]
    img_col = "image_path" if "image_path" in cols else ("image" if "image" in cols else None)
    if "image_path" in cols and "image" in cols:
        # two image columns: 'image_path' is used; an 'image' value where 'image_path' is empty would
        # otherwise be ignored without a word
        ip, im = df["image_path"].tolist(), df["image"].tolist()
        lost = [k for k, (a, b) in enumerate(zip(ip, im)) if _blank(a) and not _blank(b)]
        if lost:
            ids_ = df["item_id"].astype(str).tolist() if "item_id" in cols else [str(i) for i in df.index]
            raise ValueError(f"the products have both an 'image_path' and an 'image' column, and {len(lost)} row(s) "
                             f"have an image only in 'image' (items {[ids_[k] for k in lost[:10]]}); 'image_path' "
                             "is the one read: fill it from 'image' or drop one of the two columns")
    if "title" not in cols and img_col is None:
        raise ValueError(f"the products have neither a 'title' nor an 'image_path'/'image' column (columns: "
                         f"{cols}); give at least one of them")
    if "item_id" in cols:
        ids = df["item_id"]
        if ids.isna().any():
            rows = [int(i) for i in np.flatnonzero(ids.isna().to_numpy())[:10]]
            raise ValueError(f"item_id is missing at rows {rows}; give every product an id or drop the column")
        ids = ids.astype(str).to_numpy()
    else:
        ids = df.index.astype(str).to_numpy()
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique()
    if len(dup):
        raise ValueError(f"{len(dup)} duplicated item id(s), e.g. {dup[:10].tolist()}; ids must be unique")
    out = pd.DataFrame({"item_id": ids})
    if "title" in cols:
        out["title"] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                        for v in df["title"].tolist()]
    if img_col is not None:
        vals = []
        for v in df[img_col].tolist():
            if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
                vals.append(None)
            elif isinstance(v, (str, os.PathLike)):
                vals.append(str(Path(v).expanduser()))
            else:
                raise TypeError(f"image paths must be strings; item {ids[len(vals)]!r} has a "
                                f"{type(v).__name__} in column {img_col!r}")
        out["image_path"] = vals
    return out


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
        backend : {"torch", "onnx", "torchscript"}
        text_encoder, image_encoder : Encoder, optional
            Already-loaded encoders; by default those recorded in the export are loaded by name
            (``sk.encoders.load(name)``). Either way the fingerprint and dimension must match.
        expected_sha256 : str, optional
            sha256 of the head's ``config.json`` given by its author; see :func:`load_head` (the
            ``torchscript`` backend runs code from the folder).

        Raises
        ------
        ValueError
            Encoder fingerprint or dimension mismatch (naming both fingerprints), missing or
            corrupted files, inconsistent labels (see :func:`load_head`).
        """
        from . import encoders as _encoders

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

    # ------------------------------------------------------------------ encoding
    def embed(self, products, cache_dir=None, batch_size: int = 64, progress: bool = True):
        """Encode products with the head's encoders.

        Returns
        -------
        Embeddings
            Rows in input order (``item_id`` = the ``item_id`` column or the row index).
        """
        from .embeddings import Embeddings, encode_catalog

        df = _products_frame(products)
        cols = {"text": "title", "image": "image_path"}
        if not any(cols[m] in df.columns for m in self.head.uses):
            needs = " or ".join(f"'{cols[m]}'" for m in self.head.uses)
            raise ValueError(f"this head reads {' and '.join(self.head.uses)}, but the products have no {needs} "
                             f"column (columns: {list(df.columns)})")
        for modality in self.head.uses:
            if cols[modality] not in df.columns:
                df[cols[modality]] = None      # the head reads this modality; every product lacks it
        if len(df) == 0:
            return Embeddings(np.array([], dtype=str), None, None, np.zeros(0, bool), np.zeros(0, bool))
        return encode_catalog(df, text_encoder=self.text_encoder, image_encoder=self.image_encoder,
                              cache_dir=cache_dir, batch_size=batch_size, progress=progress)

    def _probs(self, products, cache_dir, batch_size, progress):
        emb = self.embed(products, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
        fails = emb.failures
        fails = fails[~fails["reason"].isin(_ABSENT)].reset_index(drop=True)
        usable = np.zeros(len(emb), dtype=bool)
        if "text" in self.head.uses:
            usable |= emb.text_mask
        if "image" in self.head.uses:
            usable |= emb.image_mask
        if len(emb):
            probs = self.head.predict_proba(emb)
        else:
            probs = np.zeros((0, self.head.n_classes), dtype=np.float32)
        probs[~usable] = np.nan
        nothing = emb.item_ids[~usable]
        if len(nothing):
            fails = pd.concat([fails, pd.DataFrame({"item_id": nothing, "modality": "all",
                                                    "reason": "no usable title or image: not predicted"})],
                              ignore_index=True)
        pos = pd.Series(np.arange(len(emb)), index=emb.item_ids)
        fails = fails.iloc[np.argsort(pos.reindex(fails["item_id"].astype(str)).to_numpy(), kind="stable")]
        self.failures = fails.reset_index(drop=True)
        return emb, probs, usable

    def predict_proba(self, products, cache_dir=None, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """(N, C) float32 class probabilities in input order; NaN rows for products with no usable
        title or image (listed in :attr:`failures`)."""
        return self._probs(products, cache_dir, batch_size, progress)[1]

    def predict(self, products, top_k: int = 5, crm: bool = False, cache_dir=None, batch_size: int = 64,
                progress: bool = True) -> pd.DataFrame:
        """Top-k categories of each product.

        Parameters
        ----------
        products : DataFrame or list of dict
            ``title`` and/or ``image_path`` (or ``image``: a file path); ``item_id`` optional
            (the row index is used otherwise).
        top_k : int
            Number of ranked categories per product (capped at the class count).
        crm : bool
            Rank by least expected tree distance (:func:`semcat_kit.metrics.crm_predict`) instead
            of probability; adds ``exp_dist_1..k``.
        cache_dir : path, optional
            Embedding cache (see :func:`semcat_kit.encode_catalog`).
        batch_size : int
            Encoder batch size.
        progress : bool
            ``tqdm`` progress bars while encoding.

        Returns
        -------
        pandas.DataFrame
            One row per product in input order: ``item_id``, ``pred_1..k`` (full paths),
            ``name_1..k`` (short names), ``prob_1..k``, (``exp_dist_1..k``), ``used`` (the
            modalities the prediction used: ``"text+image"``, ``"text"``, ``"image"`` or ``""``)
            and ``failures`` (``"; "``-joined reasons, ``""`` when none). Products with nothing
            usable have empty predictions. ``attrs["failures"]`` is the failures table.
        """
        top_k = as_k(top_k, "top_k")
        emb, probs, usable = self._probs(products, cache_dir, batch_size, progress)
        n, C = probs.shape
        k = min(int(top_k), C)
        idx = np.zeros((n, k), dtype=np.int64)
        cost = None
        ok = np.flatnonzero(usable)
        if len(ok):
            if crm:
                idx_ok, cost_ok = crm_predict(probs[ok], self.taxonomy, top_k=k)
                cost = np.full((n, k), np.nan)
                cost[ok] = cost_ok
            else:
                idx_ok = topk(probs[ok], k)
            idx[ok] = idx_ok
        elif crm:
            cost = np.full((n, k), np.nan)
        classes, names = np.asarray(self.classes, dtype=object), np.asarray(self.names, dtype=object)
        out = {"item_id": emb.item_ids}
        p = np.take_along_axis(probs, idx, axis=1) if n else np.zeros((0, k))
        for j in range(k):
            out[f"pred_{j + 1}"] = np.where(usable, classes[idx[:, j]], None)
        for j in range(k):
            out[f"name_{j + 1}"] = np.where(usable, names[idx[:, j]], None)
        for j in range(k):
            out[f"prob_{j + 1}"] = p[:, j].astype(np.float64)
        if crm:
            for j in range(k):
                out[f"exp_dist_{j + 1}"] = cost[:, j]
        used = []
        for i in range(n):
            parts = [m for m, mask in (("text", emb.text_mask), ("image", emb.image_mask))
                     if m in self.head.uses and mask[i]]
            used.append("+".join(parts))
        out["used"] = used
        reasons = self.failures.groupby("item_id", sort=False).apply(
            lambda g: "; ".join(f"{m}: {r}" for m, r in zip(g["modality"], g["reason"])),
            include_groups=False) if len(self.failures) else pd.Series(dtype=str)
        out["failures"] = [reasons.get(i, "") for i in emb.item_ids]
        df = pd.DataFrame(out)
        df.attrs["failures"] = self.failures.copy()
        return df
