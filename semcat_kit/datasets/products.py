"""Products to categorize: the one mapper from a table of products (a DataFrame, a list of dicts, or
a CSV / Parquet / Arrow file read in chunks) to the frame a predictor encodes, ``item_id, title,
image_path``. :class:`semcat_kit.Predictor` and ``semcat predict`` both use it. (A training catalog,
with categories, is :func:`semcat_kit.load_catalog`'s.)

The columns: ``id`` (default ``item_id``, else ``id``, else the row numbers), ``title`` (default
``title``), ``image`` (default ``image_path``, else ``image``), at least one of a title, an image
column or an ``images_dir``. Ids are kept verbatim and must be unique over the whole input
(:func:`semcat_kit._core.contracts.check_unique_ids`, the package's one id rule).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

__all__ = ["products_frame", "read_products", "id_text", "title_text", "is_blank"]

_SAY = {"id": "id=", "title": "title=", "image": "image=", "images_dir": "images_dir="}


def id_text(v) -> str:
    """An id as text, verbatim (the one rule of catalogs and of products to predict) (surrounding spaces kept: ``" 7"`` and ``"7"`` are two items); only a
    whole float (a numeric id column read by pandas) loses its ``.0``."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def is_blank(v) -> bool:
    """Whether a cell holds nothing: None, NaN, NA or a string of spaces (the one rule of catalogs and
    of products to predict)."""
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or (isinstance(v, str) and not v.strip())


def title_text(v) -> str | None:
    """A title as the text encoder reads it, in catalogs and in products to predict alike: surrounding
    spaces stripped (the embedding cache is keyed by the text), None for a blank cell."""
    return None if is_blank(v) else str(v).strip()


def products_frame(products, *, id: str | None = None, title: str | None = None, image: str | None = None,
                   images_dir=None, base_dir=None, where: str = "the products", first_row: int | None = None,
                   say: dict | None = None) -> pd.DataFrame:
    """A table of products as ``item_id, title, image_path`` (title / image_path only when given).

    Parameters
    ----------
    products : DataFrame or list of dict
    id, title, image : str, optional
        Column names; a name given must exist. Default: ``item_id`` (else ``id``, else the row
        numbers), ``title``, ``image_path`` (else ``image``) when present.
    images_dir : path, optional
        Folder of images: relative image paths are relative to it, and without an image column the
        image of item ``x`` is ``<images_dir>/x.<jpg|jpeg|png|webp>``
        (:func:`~semcat_kit.datasets.image_paths_for`).
    base_dir : path, optional
        What relative image paths are relative to when there is no ``images_dir`` (a file's folder);
        None: kept as written.
    where, first_row, say
        How messages name the input, its rows (``first_row``: a file's first data row of this chunk,
        rows named as file lines), and the options (``{"id": "--id-col", ...}``).

    Raises
    ------
    ValueError, TypeError
        A column that is not there, neither titles nor images, an empty or repeated id, an image
        path that is not text.
    """
    from .._core.contracts import check_id_values, check_unique_ids
    from .image_files import resolve_image_path

    say = {**_SAY, **(say or {})}
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

    def column(opt: str, given, defaults):
        if given is not None:
            if given not in cols:
                raise ValueError(f"{where}: no column {given!r} (from {say[opt]}); its columns are {cols}")
            return given
        return next((c for c in defaults if c in cols), None)

    id_col = column("id", id, ("item_id", "id"))
    title_col = column("title", title, ("title",))
    img_col = column("image", image, ("image_path", "image"))
    images = Path(images_dir).expanduser() if images_dir is not None else None
    if images is not None and not images.is_dir():
        raise ValueError(f"{say['images_dir']} {images_dir}: no such folder")
    if title_col is None and img_col is None and images is None:
        raise ValueError(f"{where}: neither a title column ('title', or {say['title']}) nor an image column "
                         f"('image_path' / 'image', or {say['image']}) and no {say['images_dir']} folder; its "
                         f"columns are {cols}")
    row0, row_word = (first_row + 2, "line") if first_row is not None else (0, "row")
    if id_col is not None:
        ids = df[id_col]
        empty = np.flatnonzero(ids.isna().to_numpy())
        if len(empty):
            raise ValueError(f"{where}: column {id_col!r} is empty at {row_word}(s) "
                             f"{[row0 + int(i) for i in empty[:10]]}; give every product an id")
        ids = np.array([id_text(v) for v in ids.tolist()], dtype=object)
    elif first_row is not None:
        ids = np.array([str(i) for i in range(first_row, first_row + len(df))], dtype=object)
    else:
        ids = df.index.astype(str).to_numpy()
    if id_col is not None:     # ids verbatim; a NUL in one is refused naming its rows
        check_id_values(pd.Series(ids), where=f"{where} column {id_col!r}", row0=row0, row_word=row_word)
    check_unique_ids(ids, where=where, column=id_col or "row number", row0=row0, row_word=row_word,
                     hint=f"drop or rename the duplicates, or pass {say['id']} with a unique column")
    if image is None and img_col == "image_path" and "image" in cols:
        # two image columns: 'image_path' is used; an 'image' value where it is empty would otherwise be lost
        lost = [k for k, (a, b) in enumerate(zip(df["image_path"].tolist(), df["image"].tolist()))
                if is_blank(a) and not is_blank(b)]
        if lost:
            raise ValueError(f"{where}: both an 'image_path' and an 'image' column, and {len(lost)} row(s) have an "
                             f"image only in 'image' (items {[str(ids[k]) for k in lost[:10]]}); 'image_path' is "
                             "the one read: fill it from 'image' or drop one of the two columns")
    out = pd.DataFrame({"item_id": ids})
    if title_col is not None:
        out["title"] = [title_text(v) for v in df[title_col].tolist()]
    base = images if images is not None else (Path(base_dir) if base_dir is not None else None)
    if img_col is not None:
        vals = []
        for v in df[img_col].tolist():
            if is_blank(v):
                vals.append(None)
            elif isinstance(v, (str, os.PathLike)):
                p = resolve_image_path(str(v).strip() if isinstance(v, str) else os.fspath(v), base)
                vals.append(str(p.resolve()) if p.is_absolute() else str(p))   # as the catalog mapper writes it
            else:
                raise TypeError(f"image paths must be strings; item {ids[len(vals)]!r} has a "
                                f"{type(v).__name__} in column {img_col!r}")
        out["image_path"] = vals
    elif images is not None:
        from .image_files import image_paths_for

        # the image of each id as load_catalog(images_dir=) finds it (per id, no folder listing); an
        # entry that is not a regular file (a FIFO, a folder) is passed on: encoding reports it
        out["image_path"] = image_paths_for(out["item_id"].tolist(), images).paths
    return out


def read_products(path, *, id: str | None = None, title: str | None = None, image: str | None = None,
                  images_dir=None, chunk_size: int = 8192, what: str = "products file", say: dict | None = None,
                  log: Callable[[str], None] | None = None) -> Iterator[pd.DataFrame]:
    """The products of a file, ``chunk_size`` rows at a time, each chunk mapped by
    :func:`products_frame` (relative image paths: relative to ``images_dir``, else to the file's folder).

    Read by the package's one chunked reader (:class:`~semcat_kit.datasets.CatalogFile`): CSV (a
    malformed line repaired and passed to ``log``), TSV, Parquet, Arrow; every value as text, an
    empty one missing. Ids must be unique over the whole file: a repeated id is named with every line
    it is on (the file is read again for that, only on this error).
    """
    from .._core.contracts import DuplicateIdError, check_unique_ids
    from .._core.seen_ids import SeenIds
    from .readers import ARROW_SUFFIXES, CSV_SUFFIXES, PARQUET_SUFFIXES, CatalogFile, text_frame

    p = Path(path).expanduser()
    where = f"{what} {path}"                  # how messages name the file ('--input p.csv')
    if not p.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    log = log or (lambda line: print(line, file=sys.stderr))
    known = p.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES
    f = CatalogFile(p, what=what, id_col=id or "id", repair_col=title or "title",
                    csv_options=dict(dtype=str, keep_default_na=False, na_values=[""]), format=None if known else "csv")

    def raw(chunk: int):
        chunks = f.chunks(chunk)
        while True:
            with warnings.catch_warnings():        # only around the read: repairs are logged below, once
                warnings.simplefilter("ignore")
                try:
                    df, first = next(chunks)
                except StopIteration:
                    return
            report = df.attrs.pop("report", None)
            yield text_frame({c: df[c].to_numpy(dtype=object) for c in df.columns}, df.index,
                             empty_is_missing=True), first, report

    def mapped(df, first):
        return products_frame(df, id=id, title=title, image=image, images_dir=images_dir, base_dir=p.resolve().parent,
                              where=where, first_row=first, say=say)

    seen = SeenIds()
    for df, first, report in raw(chunk_size):
        for r in (report.itertuples() if report is not None else ()):
            log(f"  {r.item_id}: {r.problem}")
        out = mapped(df, first)
        try:
            check_unique_ids(out["item_id"], where=where, seen=seen)
        except DuplicateIdError as e:
            raise _repeated_id(e.ids[0], raw, mapped, where, id, say) from None
        yield out


def _repeated_id(dup: str, raw, mapped, what: str, id, say) -> Exception:
    """The error for an id repeated in different chunks, naming every line it is on."""
    from .._core.contracts import DuplicateIdError

    lines, repeated, seen = [], set(), set()
    for df, first, _ in raw(65536):
        for i, v in enumerate(mapped(df, first)["item_id"].tolist()):
            if v == dup and len(lines) < 10:
                lines.append(first + i + 2)
            if v in seen:
                repeated.add(v)
            seen.add(v)
    col = id or "id"
    hint = (say or _SAY)["id"]
    return DuplicateIdError(sorted(repeated), f"{what}: column {col!r} repeats id {dup!r} (lines {lines}); "
                                              f"{len(repeated)} repeated id(s) in all; ids must be unique (drop or "
                                              f"rename the duplicates, or pass {hint} with a unique column)")
