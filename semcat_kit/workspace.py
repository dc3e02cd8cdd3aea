"""A work directory shared by the tutorial notebooks: each stage computed once, reused after.

The notebooks (and anyone scripting the same flow) describe *what* to use — a catalog, a text and
an image encoder, a split seed — and the :class:`Workspace` builds each stage on first use and
keeps it on disk under ``work_dir``:

===================  ==========================================================================
``catalog``          the product DataFrame (bundled tutorial, a Kaggle fashion folder, or a CSV)
``taxonomy``         :class:`~semcat_kit.Taxonomy` built from the catalog labels (conflicts kept)
``embeddings``       :func:`~semcat_kit.encode_catalog` output, cached by content under ``cache/``
``label_embeddings`` class-text embeddings (``similarity.class_texts`` + the text encoder)
``neighbors``        sparse top-k semantic neighbours of every class
``split``            stratified train/val/test split (rare classes train-only, reported)
``suite``            a comparison suite trained over seeds, kept with its heads in ``suites/``
===================  ==========================================================================

A notebook run alone therefore rebuilds exactly what it needs, and a notebook run after another
reuses its work (the encoder cache makes re-encoding a lookup).
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import datasets, encoders, similarity
from .datasets import read_csv
from .embeddings import Embeddings, encode_catalog
from .taxonomy import DEFAULT_SEP, Taxonomy

__all__ = ["Workspace", "SuiteResult"]


@dataclass
class Workspace:
    """The tutorial pipeline's state on disk.

    Parameters
    ----------
    work_dir : path
        Folder for caches, splits, trained heads and result tables (created if missing).
    catalog : str
        ``"tutorial"`` (the bundled catalog), a folder in the Kaggle "Fashion Product Images" layout
        (``styles.csv`` + ``images/``), or a CSV file read with :func:`~semcat_kit.load_catalog`
        using ``catalog_options`` (e.g. ``{"title": "name", "path_col": "category"}``).
    text_encoder, image_encoder : str or None
        Registry names for :func:`semcat_kit.encoders.load`; ``None`` skips that modality.
    class_template : str
        How a class is written for the text encoder (see ``similarity.class_texts``).
    k : int
        Number of semantic neighbours per class.
    split_seed, val, test : int, float, float
        The stratified split (see ``semcat_kit.split``).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    work_dir: str | Path
    catalog: str = "tutorial"
    text_encoder: str | None = "minilm"
    image_encoder: str | None = "efficientnet-lite0"
    class_template: str = similarity.DEFAULT_TEMPLATE
    k: int = 20
    split_seed: int = 0
    val: float = 0.1
    test: float = 0.2
    device: str = "auto"
    catalog_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir).expanduser().resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.text_encoder is None and self.image_encoder is None:
            raise ValueError("a Workspace needs a text_encoder or an image_encoder (both are None)")
        self._memo: dict[str, Any] = {}

    def _once(self, key: str, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # ------------------------------------------------------------------ stages
    def load_catalog(self) -> pd.DataFrame:
        """The product catalog (memoised)."""
        return self._once("catalog", self._read_catalog)

    def _read_catalog(self) -> pd.DataFrame:
        src = self.catalog
        if src == "tutorial":
            return datasets.load_fashion_tutorial()
        p = Path(src).expanduser()
        if p.is_dir():
            return datasets.load_fashion(p)
        if p.is_file():
            return datasets.load_catalog(p, **self.catalog_options)
        raise FileNotFoundError(f"catalog {src!r} is neither 'tutorial', a Kaggle fashion folder, nor a CSV file")

    def taxonomy(self) -> Taxonomy:
        """Taxonomy of the catalog's labels (majority policy for conflicting parents; see ``.conflicts``)."""
        sep = self.catalog_options.get("sep", DEFAULT_SEP) if self._is_csv() else DEFAULT_SEP
        return self._once("taxonomy", lambda: Taxonomy.from_paths(self.load_catalog()["label"], sep=sep))

    def _is_csv(self) -> bool:
        return self.catalog != "tutorial" and Path(self.catalog).expanduser().is_file()

    def labels(self) -> np.ndarray:
        """Class index of every catalog row."""
        return self._once("labels", lambda: self.taxonomy().index_of(self.load_catalog()["label"]))

    def encoder(self, modality: str):
        """The loaded text (``"text"``) or image (``"image"``) encoder (memoised)."""
        name = self.text_encoder if modality == "text" else self.image_encoder
        if name is None:
            return None
        return self._once(f"enc:{modality}", lambda: encoders.load(name, device=self.device))

    def embeddings(self, progress: bool = True) -> Embeddings:
        """Embeddings of the whole catalog, aligned with it (cached by content under ``cache/``)."""
        def make():
            emb = encode_catalog(self.load_catalog(), text_encoder=self.encoder("text"),
                                 image_encoder=self.encoder("image"), cache_dir=self.work_dir / "cache",
                                 progress=progress)
            return emb
        return self._once("embeddings", make)

    def label_texts(self) -> list[str]:
        return similarity.class_texts(self.taxonomy(), template=self.class_template)

    def label_embeddings(self) -> np.ndarray:
        """(C, d) embeddings of the class texts, from the text encoder (or the image encoder's text tower)."""
        enc = self.encoder("text")
        if enc is None:
            enc = self.encoder("image")
        if enc is None or not getattr(enc, "text_dim", None):
            raise ValueError("label embeddings need an encoder that reads text; set text_encoder")
        return self._once("label_emb", lambda: enc.encode_texts(self.label_texts()))

    def neighbors(self) -> similarity.Neighbors:
        """Top-``k`` semantic neighbours of every class (self excluded)."""
        return self._once("neighbors", lambda: similarity.label_neighbors(self.label_embeddings(), k=self.k))

    def split(self):
        """The stratified split (``train``, ``val``, ``test`` index arrays and a ``report``)."""
        from .splits import split

        return self._once("split", lambda: split(self.labels(), val=self.val, test=self.test, seed=self.split_seed))

    def part(self, name: str) -> tuple[Embeddings, np.ndarray]:
        """``(embeddings, class indices)`` of one split part: ``"train"``, ``"val"`` or ``"test"``."""
        sp = self.split()
        if name not in ("train", "val", "test"):
            raise ValueError(f"part must be 'train', 'val' or 'test', not {name!r}")
        idx = np.asarray(sp[name])
        return self.embeddings().take(idx), self.labels()[idx]

    def part_catalog(self, name: str) -> pd.DataFrame:
        """The catalog rows of one split part, in the same order as :meth:`part`."""
        return self.load_catalog().iloc[np.asarray(self.split()[name])].reset_index(drop=True)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Hash of everything that decides the data a model is trained on (for result caching)."""
        emb = self.embeddings(progress=False)
        key = {
            "catalog": self.catalog, "options": self.catalog_options, "template": self.class_template,
            "k": self.k, "split": [self.split_seed, self.val, self.test],
            "ids": hashlib.sha256("\n".join(map(str, emb.item_ids)).encode()).hexdigest(),
            "enc": {m: (v or {}).get("fingerprint") for m, v in emb.meta.items() if m.endswith("_encoder")},
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ the comparison suite
    def suite(self, configs: dict | None = None, seeds=(0, 1, 2), epochs: int = 30, crm_for="best",
              retrain: bool = False, progress: bool = True) -> "SuiteResult":
        """Train a comparison suite (default: :func:`semcat_kit.comparison.default_suite`) or reload it.

        Results are kept under ``work_dir/suites/<key>/`` where ``key`` hashes the data
        (:meth:`fingerprint`), the configurations and the seeds: the summary and per-seed tables
        (CSV), the test-set probabilities of every run (npz) and the first seed's head of every
        configuration (exported with :func:`semcat_kit.export_head`). A second call with the same
        inputs loads them instead of training.
        """
        from .comparison import compare, default_suite
        from .export import export_head
        from ._io import atomic_dir

        if configs is None:
            configs = default_suite(epochs=epochs, k=self.k, device=self.device)
        seeds = [int(s) for s in seeds]
        spec = {"data": self.fingerprint(), "seeds": seeds, "crm_for": crm_for,
                "configs": {n: c.to_dict() for n, c in configs.items()}}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
        folder = self.work_dir / "suites" / key
        if folder.is_dir() and not retrain:
            return SuiteResult.load(folder)
        (tr, ytr), (va, yva), (te, yte) = self.part("train"), self.part("val"), self.part("test")
        summary = compare(configs, train=(tr, ytr), val=(va, yva), test=(te, yte), taxonomy=self.taxonomy(),
                          neighbors=self.neighbors(), seeds=seeds, crm_for=crm_for, progress=progress)
        runs = summary.attrs["runs"]
        with atomic_dir(folder) as tmp:
            summary.to_csv(tmp / "summary.csv")
            runs.long.to_csv(tmp / "long.csv", index=False)
            probs = {}
            for i, name in enumerate(configs):
                for seed in seeds:
                    probs[f"{i}:{seed}"] = runs[(name, seed)].predict_proba(te).astype(np.float32)
                export_head(runs[(name, seeds[0])], tmp / "heads" / f"{i:02d}", onnx=False, torchscript=False,
                            metadata={"suite_config": name, "seed": seeds[0]})
                (tmp / "histories").mkdir(exist_ok=True)
                runs[(name, seeds[0])].history.to_csv(tmp / "histories" / f"{i:02d}.csv", index=False)
            np.savez_compressed(tmp / "test_probs.npz", y_test=yte, **probs)
            (tmp / "spec.json").write_text(json.dumps({**spec, "names": list(configs)}, indent=1, default=str))
        return SuiteResult.load(folder)


@dataclass
class SuiteResult:
    """A trained comparison suite as stored by :meth:`Workspace.suite`.

    Attributes
    ----------
    summary : DataFrame
        One row per configuration (``<metric>_mean`` / ``_std`` over seeds), CRM rows included.
    long : DataFrame
        One row per (configuration, seed).
    names : list[str]
        Configuration names in training order.
    seeds : list[int]
    y_test : ndarray
        Test-split class indices (the rows of :meth:`test_probs`).
    """

    folder: Path
    summary: pd.DataFrame
    long: pd.DataFrame
    names: list
    seeds: list
    y_test: np.ndarray

    @classmethod
    def load(cls, folder: str | Path) -> "SuiteResult":
        folder = Path(folder)
        spec = json.loads((folder / "spec.json").read_text())
        with np.load(folder / "test_probs.npz") as z:
            y = z["y_test"]
        return cls(folder, read_csv(folder / "summary.csv", what="suite summary", index_col="config"),
                   read_csv(folder / "long.csv", what="suite table"), spec["names"], spec["seeds"], y)

    def _pos(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"{name!r} is not a configuration of this suite; choose from {self.names}")
        return self.names.index(name)

    def test_probs(self, name: str, seed: int | None = None) -> np.ndarray:
        """(N_test, C) probabilities of configuration ``name`` (first seed by default)."""
        seed = self.seeds[0] if seed is None else seed
        with np.load(self.folder / "test_probs.npz") as z:
            return z[f"{self._pos(name)}:{seed}"]

    def head_dir(self, name: str) -> Path:
        """Export folder of the first seed's head of configuration ``name``."""
        return self.folder / "heads" / f"{self._pos(name):02d}"

    def head(self, name: str, backend: str = "torch"):
        """The first seed's head of ``name`` reloaded with :func:`semcat_kit.load_head`."""
        from .export import load_head

        return load_head(self.head_dir(name), backend=backend)

    def history(self, name: str) -> pd.DataFrame:
        """Per-epoch training history of the first seed's run of ``name``."""
        return read_csv(self.folder / "histories" / f"{self._pos(name):02d}.csv", what="training history")

    def best(self, metric: str = "top1") -> str:
        """Name of the (non-CRM) configuration with the best mean ``metric``."""
        col = f"{metric}_mean"
        rows = self.summary.loc[[n for n in self.names if n in self.summary.index]]
        from .metrics import lower_is_better

        return str(rows[col].idxmin() if lower_is_better(metric) else rows[col].idxmax())
