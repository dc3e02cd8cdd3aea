"""One pipeline from a catalog to the data a head is trained and judged on.

::

    catalog -> taxonomy -> encoders -> embeddings -> neighbours -> split -> (suite / train)

:class:`Pipeline` is the only place these stages are wired together: the notebooks' shared
:class:`~semcat_kit.Workspace` and the ``semcat train`` command both hold one, so they cannot
diverge (same separator handling, same neighbour fallback, same ``min_count``). Its configuration is
one explicit, printable dataclass (:class:`PipelineConfig`); every stage is a method that builds on
first call and is memoised after (``pipe.built`` lists what exists).

What it accepts
---------------
* any catalog: ``"tutorial"``, a Kaggle fashion folder (``styles.csv`` + ``images/``), a CSV or
  Parquet file, or a DataFrame, read with :func:`~semcat_kit.load_catalog` and ``catalog_options``;
* an external ``taxonomy`` (Google file, list of paths, saved Taxonomy): its classes are the class
  set, so classes without products exist, get neighbours and soft-label mass and can be predicted;
  catalog labels that are not classes are reported by row with the closest paths suggested;
* text-only or image-only catalogs (``image_encoder=None`` / ``text_encoder=None``);
* unlabelled rows: reported, kept out of the split, and available for prediction
  (:meth:`Pipeline.unlabelled_catalog`).

:meth:`Pipeline.validate` checks all of it up front and raises :class:`PipelineError`, one sentence
naming the parameter, the column or the file (notebooks call it right after their parameters).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._core.chunks import DEFAULT_CHUNK_SIZE
from ..datasets import load_catalog, load_fashion, load_fashion_tutorial, sample_catalog
from ..encode import encoders
from ..labels import similarity
from ..encode.embeddings import Embeddings
from ..encode.encode import encode_catalog
from ..encode.sharded import encode_distributed
from ..datasets.taxonomy import DEFAULT_SEP, Taxonomy, read_taxonomy, suggest_classes
from .config import CATALOG_OPTIONS, PipelineConfig, PipelineError, catalog_kwargs, pipeline_config

__all__ = ["Pipeline", "PipelineError"]


#: File of an exported head folder listing which split each labelled product was in
#: (columns ``item_id, split``), written by :meth:`Pipeline.export_head` and ``semcat train``.
SPLIT_FILE = "split.csv"

class Pipeline:
    """Catalog -> taxonomy -> encoders -> embeddings -> neighbours -> split, built on demand.

    Parameters
    ----------
    config : PipelineConfig, optional
        The configuration; keyword arguments override its fields (``Pipeline(catalog=..., k=10)``).
    cache_dir : path, optional
        Embedding cache folder (re-runs read vectors instead of encoding).

    Examples
    --------
    >>> pipe = Pipeline(catalog="products.csv", image_encoder=None,                 # doctest: +SKIP
    ...                 catalog_options={"id": "sku", "title": "name", "path_col": "category"})
    >>> pipe.validate()                                                              # doctest: +SKIP
    >>> (X, y), (Xv, yv) = pipe.part("train"), pipe.part("val")                      # doctest: +SKIP
    """

    #: Whether the class texts' embeddings go through ``cache_dir`` too (:meth:`label_embeddings`):
    #: a :class:`~semcat_kit.Workspace`'s own cache, not a product store given to ``semcat train``.
    cache_label_texts = False

    def __init__(self, config: PipelineConfig | None = None, cache_dir=None, **overrides):
        if config is not None and not isinstance(config, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, not {type(config).__name__} (give the catalog as "
                            f"catalog=...)")
        if "catalog_options" in overrides and overrides["catalog_options"] is None:
            overrides["catalog_options"] = {}
        config = dataclasses.replace(config or PipelineConfig(), **overrides)
        self.config = config
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._memo: dict[str, Any] = {}
        if config.text_encoder is None and config.image_encoder is None:
            raise PipelineError("text_encoder and image_encoder are both None: give at least one "
                                "(e.g. text_encoder='minilm')")

    @classmethod
    def from_train_config(cls, catalog, cfg: dict, cache_dir=None) -> "Pipeline":
        """The pipeline every ``semcat`` command runs for a YAML config read by
        :func:`~semcat_kit.orchestrate.config.read_train_config` and a catalog source (``"tutorial"``,
        a Kaggle fashion folder, or a catalog file read with the config's ``catalog:`` mapping)."""
        return cls(pipeline_config(catalog, cfg), cache_dir=cache_dir)

    def __repr__(self) -> str:
        c = self.config
        cat = c.catalog if not isinstance(c.catalog, pd.DataFrame) else f"<DataFrame {len(c.catalog)} rows>"
        tax = "catalog labels" if c.taxonomy is None else (
            repr(c.taxonomy) if isinstance(c.taxonomy, (str, Path, Taxonomy)) else f"<{len(c.taxonomy)} paths>")
        return (f"Pipeline(catalog={cat!r}, taxonomy={tax}, text={c.text_encoder!r}, image={c.image_encoder!r}, "
                f"k={c.k}, split=({c.val}, {c.test}, seed {c.split_seed}), built={self.built})")

    @property
    def built(self) -> list[str]:
        """Stages computed so far."""
        return list(self._memo)

    def _once(self, key: str, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # ------------------------------------------------------------------ validation
    def validate(self) -> pd.Series:
        """Check every input up front; returns a short summary, raises :class:`PipelineError`.

        Checked: the option names and types, that the catalog can be read with its column mapping
        (a missing column is named with the columns that exist), the taxonomy source, that the
        encoders are known, and that at least two classes have labelled products. Reads the catalog
        and builds the taxonomy (both memoised), encodes nothing.

        Returns
        -------
        pandas.Series
            ``products, labelled, unlabelled, unknown_labels, classes, classes_with_products``.
        """
        c = self.config
        bad = [k for k in c.catalog_options if k not in CATALOG_OPTIONS]
        if bad:
            raise PipelineError(f"catalog_options has unknown key {bad[0]!r}; known keys: {', '.join(CATALOG_OPTIONS)}")
        for name in ("text_encoder", "image_encoder"):
            v = getattr(c, name)
            if v is None:
                continue
            if not isinstance(v, str) or not v:
                raise PipelineError(f"{name} must be an encoder name such as 'minilm', or None; got {v!r}")
            prefix = v.split(":", 1)[0].split("@", 1)[0]
            if prefix not in encoders.available():
                raise PipelineError(f"{name}={v!r} is not a known encoder; known: {', '.join(encoders.available())}")
        if isinstance(c.k, bool) or not isinstance(c.k, (int, np.integer)) or c.k < 1:
            raise PipelineError(f"k must be a positive integer, not {c.k!r}")
        for name in ("val", "test"):
            v = getattr(c, name)
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise PipelineError(f"{name} must be a fraction in [0, 1), not {v!r}")
        if c.val + c.test >= 1:
            raise PipelineError(f"val + test = {c.val + c.test} leaves nothing to train on; keep it below 1")
        if c.sample is not None and (isinstance(c.sample, bool) or not isinstance(c.sample, int) or c.sample < 2):
            raise PipelineError(f"sample must be an integer >= 2 or None, not {c.sample!r}")
        try:
            cat = self.load_catalog()
            tax = self.taxonomy()
        except PipelineError:
            raise
        except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise PipelineError(" ".join(str(msg).split())) from None
        y = self.labels()
        n_lab = int((y >= 0).sum())
        present = np.unique(y[y >= 0])
        unknown = self.unknown_labels()
        if len(present) < 2 and len(unknown):
            r = unknown.iloc[0]
            raise PipelineError(f"{len(unknown)} of the catalog's {n_lab + len(unknown)} labelled products have a "
                                f"label that is not a class of the taxonomy (e.g. row {r['row']}: {r['label']!r}, "
                                f"closest: {r['suggestions'][:2]}), leaving {len(present)} class(es) with products; "
                                "map the labels to taxonomy paths (see unknown_labels()) or drop taxonomy=")
        if len(present) < 2:
            what = (f"only one class ({tax.classes[int(present[0])]!r})" if len(present) == 1
                    else "no labelled products")
            raise PipelineError(f"the catalog has {what} among its {len(cat)} products: a classifier needs at "
                                "least two classes with products (check the category column in catalog_options)")
        return pd.Series({"products": len(cat), "labelled": n_lab, "unlabelled": int(cat["label"].isna().sum()),
                          "unknown_labels": len(self.unknown_labels()), "classes": tax.n_classes,
                          "classes_with_products": len(present)})

    # ------------------------------------------------------------------ catalog
    def load_catalog(self) -> pd.DataFrame:
        """The product catalog (memoised); unlabelled rows have ``label`` None."""
        return self._once("catalog", self._read_catalog)

    def release_catalog(self) -> None:
        """Forget the memoised catalog table (read again if asked for).

        Labels, the split, the embeddings and everything built from them stay memoised as arrays,
        so training and evaluation go on without the table's Python string per cell (``semcat
        train`` releases it before training; ~0.3-0.5 GB per million products).
        """
        self._memo.pop("catalog", None)

    def _read_catalog(self) -> pd.DataFrame:
        c = self.config
        src = c.catalog
        opts = dict(c.catalog_options)
        if isinstance(src, pd.DataFrame):
            cat = load_catalog(src, **catalog_kwargs(opts, None))
        elif isinstance(src, (str, Path)) and str(src) == "tutorial":
            cat = load_fashion_tutorial()
        elif isinstance(src, (str, Path)):
            p = Path(src).expanduser()
            if p.is_dir():
                if not (p / "styles.csv").is_file():
                    raise PipelineError(f"catalog {str(src)!r} is a folder without styles.csv: a folder must have the "
                                        "Kaggle fashion layout (styles.csv + images/); for another layout give the "
                                        "CSV file and catalog_options")
                cat = load_fashion(p)
            elif p.is_file():
                if opts.get("path") is None and opts.get("path_col") is None:
                    raise PipelineError(f"catalog {str(src)!r} is a file: catalog_options needs 'path_col' (one column "
                                        "of 'A > B > C' paths) or 'path' (level columns, top first)")
                # CSV, Parquet or Arrow: image paths relative to the file's folder (as semcat encode reads it)
                cat = load_catalog(p, **catalog_kwargs(opts, p.resolve().parent))
            else:
                raise FileNotFoundError(f"catalog {str(src)!r} is neither 'tutorial', a Kaggle fashion folder, "
                                        "nor a CSV/Parquet file (no such file or folder)")
        else:
            raise PipelineError(f"catalog must be 'tutorial', a path or a DataFrame, not {type(src).__name__}")
        if c.sample is not None and c.sample < len(cat):
            cat = sample_catalog(cat, c.sample, c.sample_seed)
        return cat

    @property
    def sep(self) -> str:
        """Separator of the catalog's label paths (``catalog_options['sep']`` for files, else ``' > '``)."""
        c = self.config
        if isinstance(c.catalog, (str, Path)) and (str(c.catalog) == "tutorial" or Path(c.catalog).expanduser().is_dir()):
            return DEFAULT_SEP
        return c.catalog_options.get("sep", DEFAULT_SEP)

    # ------------------------------------------------------------------ taxonomy and labels
    def taxonomy(self) -> Taxonomy:
        """The class set: the external ``taxonomy`` if given, else the catalog's label paths
        (majority policy for conflicting parents; see ``.conflicts``)."""
        def make():
            src = self.config.taxonomy
            if src is None:
                labels = self.load_catalog()["label"].dropna()
                if not len(labels):
                    raise PipelineError("the catalog has no labelled products: every row's category is empty "
                                        "(check the category column in catalog_options)")
                return Taxonomy.from_paths(labels, sep=self.sep, label_case=self._label_case(),
                                           rows=self._row_names(labels.index))
            try:
                return read_taxonomy(src, sep=self.sep)
            except (ValueError, TypeError, FileNotFoundError) as e:
                raise PipelineError(f"taxonomy={src if isinstance(src, (str, Path)) else type(src).__name__!s}: "
                                    f"{' '.join(str(e).split())}") from None
        return self._once("taxonomy", make)

    def _label_case(self) -> str:
        """``catalog_options["label_case"]`` (default ``"merge"``), checked."""
        from ..datasets.taxonomy import LABEL_CASE_POLICIES

        v = self.config.catalog_options.get("label_case") or "merge"
        if v not in LABEL_CASE_POLICIES:
            raise PipelineError(f"catalog_options label_case must be one of {LABEL_CASE_POLICIES}, not {v!r}: 'merge' "
                                "merges spellings that differ only in letter case, 'strict' refuses them")
        return v

    def _row_names(self, rows) -> "_RowNames":
        """How messages name catalog rows (``rows``: catalog index labels): the file line (header = line
        1) of a CSV read whole, else the item id; built only for the rows a message names."""
        from ..datasets.readers import ARROW_SUFFIXES, PARQUET_SUFFIXES

        c, src = self.config, self.config.catalog
        csv = (isinstance(src, (str, Path)) and str(src) != "tutorial" and Path(src).expanduser().is_file()
               and Path(src).suffix.lower() not in PARQUET_SUFFIXES + ARROW_SUFFIXES and c.sample is None)
        return _RowNames(np.asarray(rows), self.load_catalog()["item_id"], csv)

    def _label_index(self) -> tuple[np.ndarray, pd.DataFrame]:
        def make():
            cat, tax = self.load_catalog(), self.taxonomy()
            labels = cat["label"]
            y = np.full(len(cat), -1, dtype=np.int64)
            rows = []
            has = np.flatnonzero(labels.notna().to_numpy())
            resolved = tax.resolve(labels.iloc[has].tolist())
            index = {cl: i for i, cl in enumerate(tax.classes)}
            bad = []
            for r, lab in zip(has, resolved):
                i = index.get(lab, -1)
                y[r] = i
                if i < 0:
                    bad.append(r)
            if bad:
                sugg = suggest_classes([labels.iat[r] for r in bad], tax)
                rows = [{"row": int(r), "item_id": cat["item_id"].iat[r], "label": labels.iat[r],
                         "suggestions": sugg[labels.iat[r]]} for r in bad]
            return y, pd.DataFrame(rows, columns=["row", "item_id", "label", "suggestions"])
        return self._once("labels", make)

    def labels(self) -> np.ndarray:
        """Class index of every catalog row; ``-1`` for unlabelled rows and labels not in the taxonomy."""
        return self._label_index()[0]

    def unknown_labels(self) -> pd.DataFrame:
        """Rows whose label is not a class of the taxonomy: ``row, item_id, label, suggestions``
        (the closest taxonomy paths). Such rows are kept out of training like unlabelled ones."""
        return self._label_index()[1]

    def labelled_rows(self) -> np.ndarray:
        """Positions of the rows with a class (the ones split into train/val/test)."""
        return np.flatnonzero(self.labels() >= 0)

    def unlabelled_rows(self) -> np.ndarray:
        """Positions of the rows without a usable class (no category, or one not in the taxonomy)."""
        return np.flatnonzero(self.labels() < 0)

    def unlabelled_catalog(self) -> pd.DataFrame:
        """The catalog rows without a usable class: the products a trained head categorizes."""
        return self.load_catalog().iloc[self.unlabelled_rows()].reset_index(drop=True)

    def class_counts(self) -> pd.Series:
        """Labelled products per class, indexed by class path (classes without products: 0)."""
        y = self.labels()
        n = np.bincount(y[y >= 0], minlength=self.taxonomy().n_classes)
        return pd.Series(n, index=self.taxonomy().classes, name="products")

    # ------------------------------------------------------------------ encoders and embeddings
    def encoder(self, modality: str):
        """The loaded ``"text"`` or ``"image"`` encoder (memoised), or None when not configured."""
        if modality not in ("text", "image"):
            raise ValueError(f"modality must be 'text' or 'image', not {modality!r}")
        name = self.config.text_encoder if modality == "text" else self.config.image_encoder
        if name is None:
            return None
        return self._once(f"enc:{modality}", lambda: encoders.load(name, device=self.config.device))

    def embeddings(self, progress: bool = True) -> Embeddings:
        """Embeddings of every catalog row (unlabelled ones included), aligned with the catalog.

        Under ``torchrun`` with a ``cache_dir``, each rank encodes (and hashes) only its share of the
        catalog into the store and gets a view of all of it (:func:`~semcat_kit.encode.sharded.encode_distributed`).
        """
        from .._core import distributed

        def make():
            kw = dict(text_encoder=self.encoder("text"), image_encoder=self.encoder("image"),
                      cache_dir=self.cache_dir, progress=progress)
            if distributed.is_distributed() and self.cache_dir is not None:
                return encode_distributed(self.load_catalog(), **kw)
            return encode_catalog(self.load_catalog(), **kw)
        return self._once("embeddings", make)

    @property
    def catalog_file(self) -> Path | None:
        """The catalog's file when it is a CSV / Parquet / Arrow file (read chunk by chunk when
        encoding into the store), else None (``"tutorial"``, a Kaggle folder, a DataFrame)."""
        src = self.config.catalog
        if isinstance(src, (str, Path)) and str(src) != "tutorial" and Path(src).expanduser().is_file():
            return Path(src).expanduser()
        return None

    def catalog_share(self, rank: int = 0, world: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE, rows_out=None, log=None):
        """Process ``rank`` of ``world``'s share of the catalog: the rows ``load_catalog().iloc[rank::world]``
        as ``item_id, title, image_path`` frames.

        A catalog file is streamed ``chunk_size`` rows at a time and never held whole
        (:func:`~semcat_kit.orchestrate.catalog_share.catalog_file_share`, which also documents
        ``rows_out`` and ``log``); another catalog is loaded and sliced. Returns ``(frames, total)``.
        """
        from .catalog_share import SHARE_COLUMNS, catalog_file_share

        c = self.config
        if self.catalog_file is not None:
            if c.catalog_options.get("path") is None and c.catalog_options.get("path_col") is None:
                self.load_catalog()            # the pipeline's one error for a file without a category column
            return catalog_file_share(self.catalog_file, c.catalog_options, sample=c.sample, seed=c.sample_seed,
                                      rank=rank, world=world, chunk_size=chunk_size, rows_out=rows_out,
                                      images=c.image_encoder is not None, log=log)
        share = self.load_catalog().iloc[rank::world]
        return iter([share[SHARE_COLUMNS]]), len(share)

    def fill_store(self, rank: int = 0, world: int = 1, *, batch_size: int = 64, num_workers: int | None = None,
                   chunk_size: int = DEFAULT_CHUNK_SIZE, store_dtype: str = "float32", rows_out=None, progress: bool = True,
                   log=None):
        """Encode process ``rank`` of ``world``'s share of the catalog (:meth:`catalog_share`) into the
        store at ``cache_dir`` (:func:`semcat_kit.encode_into_store`; resumable, no vectors returned).
        ``semcat encode`` runs it on every ``torchrun`` rank, then :meth:`merge_stores` on rank 0."""
        from ..encode.encode import encode_into_store

        if self.cache_dir is None:
            raise PipelineError("fill_store needs a cache_dir (the store folder)")
        if world > 1:        # every rank must read the same catalog, or each encodes its share of another one
            self.check_same_catalog_on_every_rank()
        frames, total = self.catalog_share(rank, world, chunk_size=chunk_size, rows_out=rows_out, log=log)
        return encode_into_store(frames, text_encoder=self.encoder("text"), image_encoder=self.encoder("image"),
                                 cache_dir=self.cache_dir, batch_size=batch_size, num_workers=num_workers,
                                 chunk_size=chunk_size, store_dtype=store_dtype, store_writer=f"r{rank}", total=total,
                                 progress=progress, check_ids=self.catalog_file is None)   # a file's: checked by its reader

    def check_same_catalog_on_every_rank(self) -> None:
        """Refuse, on every ``torchrun`` rank alike and before anything is encoded, ranks that would read
        different catalogs: other rows, another order, another sample or column mapping. A catalog
        file is compared by size and SHA-256 (:func:`semcat_kit._core.digest.file_sha256`).

        Raises
        ------
        PipelineError
            Naming the ranks that differ from rank 0 and in what (its ``all_ranks`` is True: every
            rank raises it, ``semcat`` prints it once).
        """
        import json

        from .._core import distributed
        from .._core.digest import file_sha256

        c = self.config
        ident = {"sample": c.sample, "seed": c.sample_seed,
                 "mapping": json.dumps(c.catalog_options, sort_keys=True, default=str)}
        if self.catalog_file is not None:
            ident.update(bytes=self.catalog_file.stat().st_size, sha256=file_sha256(self.catalog_file))
        else:
            ident["source"] = str(c.catalog) if not isinstance(c.catalog, pd.DataFrame) else "a DataFrame"
        per = distributed.all_gather_object(ident)
        diff = {r: sorted(k for k in ident if p.get(k) != per[0].get(k)) for r, p in enumerate(per)}
        diff = {r: d for r, d in diff.items() if d}
        if diff:
            shown = "; ".join(f"rank {r}: {', '.join(k if k != 'sha256' else 'content' for k in d)}"
                              for r, d in diff.items())
            err = PipelineError(f"the ranks would read different catalogs for {c.catalog} (differing from rank 0: "
                                f"{shown}); every rank must read the same catalog file (same rows in the same "
                                "order) with the same --config and --sample. Nothing was encoded")
            err.all_ranks = True
            raise err

    def merge_stores(self, store_dtype: str = "float32") -> dict:
        """Adopt and verify every writer's shards and merge full tiers, in the store of each
        configured encoder (after :meth:`fill_store` on every rank); returns ``{modality: store}``."""
        from ..encode.store import VectorStore

        stores = {}
        for m in ("text", "image"):
            enc = self.encoder(m)
            if enc is None:
                continue
            store = VectorStore.for_encoder(self.cache_dir, enc.fingerprint, m,
                                            enc.text_dim if m == "text" else enc.image_dim,
                                            dtype=store_dtype, writer="r0")
            store.merge()
            stores[m] = store
        return stores

    def write_embeddings(self, out, rows=None, *, batch_size: int = 64, num_workers: int | None = None,
                         chunk_size: int = DEFAULT_CHUNK_SIZE, store_dtype: str = "float32", progress: bool = True):
        """Write the embeddings of the whole catalog (or of ``rows``: a file of :meth:`catalog_share`'s
        ``rows_out``) to the folder ``out``, read from the store (:func:`semcat_kit.encode_catalog`)."""
        return encode_catalog(self.load_catalog() if rows is None else rows, text_encoder=self.encoder("text"),
                              image_encoder=self.encoder("image"), cache_dir=self.cache_dir, batch_size=batch_size,
                              num_workers=num_workers, progress=progress, chunk_size=chunk_size, out=out,
                              store_dtype=store_dtype, store_writer="r0")

    def label_texts(self) -> list[str]:
        """How each class is written for the text encoder (``config.class_template``)."""
        return similarity.class_texts(self.taxonomy(), template=self.config.class_template)

    def text_reader(self):
        """The encoder that embeds class texts: the text encoder, else an image encoder with a text tower."""
        enc = self.encoder("text")
        if enc is None:
            enc = self.encoder("image")
        return enc if enc is not None and getattr(enc, "text_dim", None) else None

    def label_embeddings(self) -> np.ndarray:
        """(C, d) embeddings of the class texts. In a :class:`~semcat_kit.Workspace` they go through
        its work dir's content-addressed vector cache, as the products' titles do, so a later session
        (the next notebook) looks them up instead of encoding them again: 5,595 Google-taxonomy
        classes took 23 s with all-MiniLM-L6-v2 on 2 cores, every notebook (one process at a time:
        under torchrun each rank encodes them itself). A plain pipeline (``semcat train
        --cache-dir``) encodes them and leaves the product store as it found it."""
        enc = self.text_reader()
        if enc is None:
            raise PipelineError("label embeddings need an encoder that reads text; set text_encoder")

        from .._core import distributed

        def make():
            texts = self.label_texts()
            if not self.cache_label_texts or self.cache_dir is None or distributed.is_distributed():
                return enc.encode_texts(texts)
            table = pd.DataFrame({"item_id": [f"class-{i}" for i in range(len(texts))], "title": texts})
            emb = encode_catalog(table, text_encoder=enc, image_encoder=None, cache_dir=self.cache_dir, progress=False)
            return np.asarray(emb.text, dtype=np.float32)
        return self._once("label_emb", make)

    def n_neighbors(self) -> int:
        """``k`` capped at ``n_classes - 1``."""
        return int(min(self.config.k, max(1, self.taxonomy().n_classes - 1)))

    def neighbors(self) -> similarity.Neighbors:
        """Top-k neighbours of every class (self excluded): from the class-text embeddings, or from
        the tree (:func:`semcat_kit.labels.similarity.tree_neighbors`) when no encoder reads text."""
        def make():
            if self.text_reader() is not None:
                return similarity.label_neighbors(self.label_embeddings(), k=self.n_neighbors())
            return similarity.tree_neighbors(self.taxonomy(), self.n_neighbors())
        return self._once("neighbors", make)

    # ------------------------------------------------------------------ split
    def split(self):
        """Stratified split of the labelled rows: ``train``, ``val``, ``test`` catalog positions and a
        per-class ``report`` (rare classes train-only). Unlabelled rows are in none of them."""
        from ..datasets.splits import split

        def make():
            c = self.config
            rows = self.labelled_rows()
            sp = split(self.labels()[rows], val=c.val, test=c.test, seed=c.split_seed, min_count=c.min_count)
            sp.train, sp.val, sp.test = rows[sp.train], rows[sp.val], rows[sp.test]
            return sp
        return self._once("split", make)

    def part(self, name: str) -> tuple[Embeddings, np.ndarray]:
        """``(embeddings, class indices)`` of one split part: ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"part must be 'train', 'val' or 'test', not {name!r}")
        idx = np.asarray(self.split()[name])
        return self.embeddings().take(idx), self.labels()[idx]

    def part_catalog(self, name: str) -> pd.DataFrame:
        """The catalog rows of one split part, in the same order as :meth:`part`."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"part must be 'train', 'val' or 'test', not {name!r}")
        return self.load_catalog().iloc[np.asarray(self.split()[name])].reset_index(drop=True)

    # ------------------------------------------------------------------ training
    def train_config(self, config=None, val: bool = True):
        """``config`` (default ``TrainConfig()``) resolved for this catalog's split: what :meth:`train` trains.

        :meth:`semcat_kit.TrainConfig.resolve` for the sizes of the train and val parts (the same
        decision :func:`semcat_kit.train` makes): every ``"auto"`` field gets the measured value for
        data of this size (step budget, early stopping); a value you set is kept. What was decided is
        in the result's ``decided`` and its repr; ``result.budget(n_train)`` says the budget in words.
        """
        from ..learn.config import TrainConfig

        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, not {type(config).__name__}")
        sp = self.split()
        return config.resolve(len(sp.train), len(sp.val) if val else 0)

    def train(self, config=None, val: bool = True, progress: bool = True):
        """Train one head on the train part with :meth:`train_config` (the ``"auto"`` fields decided for
        this split; validation on the val part when ``val`` and it is non-empty)."""
        from ..learn.training import train

        config = self.train_config(config, val=val)
        (tr, ytr) = self.part("train")
        va = self.part("val") if val and len(self.split().val) else None
        return train(tr, ytr, taxonomy=self.taxonomy(), neighbors=self.neighbors(), config=config, val=va,
                     progress=progress)

    def evaluate(self, run, part: str = "test") -> dict:
        """:func:`semcat_kit.evaluate` of ``run`` on one part (empty dict when the part is empty),
        streamed block by block (:meth:`TrainRun.evaluate`): no (N, C) probability matrix."""
        if not len(self.split()[part]):
            return {}
        emb, y = self.part(part)
        return {k: float(v) for k, v in run.evaluate(emb, y, neighbors=self.neighbors()).items()}


    def export_head(self, run, out, *, onnx: bool = False, pt2: bool = False, overwrite: bool = False,
                    metadata: dict | None = None) -> dict:
        """Export ``run`` (:func:`semcat_kit.export_head`) with what this pipeline's split measures of it.

        Besides the head: its test metrics (and, for a head that reads titles and images, the same
        metrics with every image left out: what ``semcat predict --text-only`` gives), hedging
        thresholds calibrated on the val part, whether CRM decoding can be trusted on it
        (:func:`semcat_kit.judge.decoding.crm_trust`), all in the head's metadata, and
        ``split.csv`` (:data:`SPLIT_FILE`: ``item_id, split`` of every labelled product), so that
        predicting the ``test`` ids reproduces the test metrics. ``semcat train`` prints the
        returned dict.

        Returns
        -------
        dict
            ``test_metrics``, ``test_metrics_text_only`` (dicts, empty when not measured),
            ``hedging`` (the calibration or None without val products), ``crm_trust`` (or None),
            ``split_file`` (its path).
        """
        from ..judge.decoding import crm_trust
        from ..judge.hedging import CalibrationWarning, calibrate_hedging
        from ..ship.export import export_head

        import warnings

        out = Path(out)
        sp = self.split()
        metrics = self.evaluate(run, "test")
        text_only = self._text_only_metrics(run) if metrics else {}
        hedging = trust = None
        if len(sp.val):
            vemb, yv = self.part("val")
            pv = run.predict_proba(vemb)
            with warnings.catch_warnings():     # too few val products for a precision: in the table
                warnings.simplefilter("ignore", CalibrationWarning)
                hedging = calibrate_hedging(pv, yv, run.taxonomy)
            trust = crm_trust(pv)
        meta = dict(metadata or {})
        meta["test_metrics"] = metrics
        if text_only:
            meta["test_metrics_text_only"] = text_only
        if trust is not None:
            meta["crm_trust"] = {"ok": trust.ok, "confidence": trust.confidence, "threshold": trust.threshold}
        meta["split"] = {**meta.get("split", {}), "n_train": len(sp.train), "n_val": len(sp.val),
                         "n_test": len(sp.test), "ids_file": SPLIT_FILE}
        export_head(run, out, onnx=onnx, pt2=pt2, overwrite=overwrite, metadata=meta, hedging=hedging)
        self._write_split(out / SPLIT_FILE)
        return {"test_metrics": metrics, "test_metrics_text_only": text_only, "hedging": hedging,
                "crm_trust": trust, "split_file": out / SPLIT_FILE}

    def _write_split(self, path: Path) -> None:
        """``item_id, split`` (``train`` / ``val`` / ``test``) of every labelled product, in catalog order,
        written atomically."""
        from .._core.io import atomic_path

        sp = self.split()
        rows = np.concatenate([sp.train, sp.val, sp.test]).astype(np.int64)
        names = np.repeat(np.array(["train", "val", "test"], dtype=object), [len(sp.train), len(sp.val), len(sp.test)])
        order = np.argsort(rows, kind="stable")
        df = pd.DataFrame({"item_id": np.asarray(self.embeddings(progress=False).item_ids)[rows[order]],
                           "split": names[order]})
        with atomic_path(path, suffix=".csv") as tmp:
            df.to_csv(tmp, index=False)

    def _text_only_metrics(self, run) -> dict:
        """Test metrics of a head that reads titles and images when every image is left out (what
        ``semcat predict --text-only`` gives); empty for a head of one modality."""
        model = run.model
        if getattr(model, "image_proj", None) is None or getattr(model, "text_proj", None) is None:
            return {}
        emb, y = self.part("test")
        blind = dataclasses.replace(emb, image_mask=np.zeros(len(emb), dtype=bool))
        return {k: float(v) for k, v in run.evaluate(blind, y, neighbors=self.neighbors()).items()}

    # ------------------------------------------------------------------ tuning
    def tune(self, objective, n_trials: int = 30, timeout: float | None = None, base_config=None, seed: int = 0,
             progress: bool = True, **tune_kwargs):
        """:func:`semcat_kit.experiments.tuning.tune` on this pipeline's data: trials train on the train
        part and are scored on the val part, with this taxonomy and these neighbours (unlabelled rows and
        labels outside the taxonomy are in neither part, as for :meth:`train`). ``tune_kwargs`` go to
        ``tune`` (``storage=``, ``study_name=``, ``pruner=``: a resumable study).

        Raises
        ------
        PipelineError
            The split has no validation products (the tuner scores trials on them).
        """
        from ..experiments.tuning import tune

        if not len(self.split().val):
            raise PipelineError("the split has no validation products; the tuner scores trials on them "
                                "(set split.val > 0)")
        return tune(self.part("train"), self.part("val"), taxonomy=self.taxonomy(), neighbors=self.neighbors(),
                    objective=objective, n_trials=n_trials, timeout=timeout, base_config=base_config, seed=seed,
                    progress=progress, allow_unseen_val_classes=True, **tune_kwargs)


class _RowNames:
    """``names[i]``: ``"line 26 (item 'x')"`` (a CSV read whole: the data row + 2) or ``"item 'x'"``."""

    def __init__(self, rows: np.ndarray, ids: pd.Series, lines: bool):
        self.rows, self.ids, self.lines = rows, ids, lines

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i) -> str:
        r = self.rows[i]
        item = f"item {self.ids.at[r]!r}"
        return f"line {int(r) + 2} ({item})" if self.lines else item
