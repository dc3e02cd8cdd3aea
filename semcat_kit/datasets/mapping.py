"""The catalog frame: a CSV / Parquet / Arrow file or a DataFrame mapped to the package's columns.

Every catalog loader returns a :class:`pandas.DataFrame` with the columns

``item_id`` (str), ``title`` (str, ``""`` where missing), ``image_path`` (absolute str, or ``None``
when there is no image file), ``label`` (the full category path ``"A > B > C"``),
``level_1 .. level_L`` (one column per taxonomy level), then every other column of the source.

Catalog files too large to hold are read in chunks: :func:`load_catalog_chunks` applies
:func:`load_catalog`'s mapping to each chunk of a :class:`~semcat_kit.datasets.readers.CatalogFile`.

Ids and image paths follow the same rules as the products to predict
(:func:`semcat_kit.datasets.products.products_frame`): :func:`~semcat_kit.datasets.products.id_text`
(verbatim; a whole float loses its ``.0``) and :func:`~semcat_kit.datasets.image_files.resolve_image_path`
(relative to the images folder or the file's folder; ``sub\\1.jpg`` from Windows accepted).

Rows that are kept but are not fully usable (an empty title, a missing image file, a malformed
CSV line that was repaired) are listed in ``df.attrs["report"]``, a
:class:`~semcat_kit.datasets.report.ProblemReport` DataFrame with columns ``item_id, column, problem``.
Nothing is dropped silently.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .csv_files import read_csv
from .image_files import IMAGE_EXTENSIONS, image_paths_for, resolve_image_path
from .images import NO_IMAGE_PATH, ImageError, check_image_file, image_problem
from .products import id_text, is_blank, title_text
from .readers import ARROW_SUFFIXES, CSV_SUFFIXES, PARQUET_SUFFIXES, CatalogFile
from .report import make_report
from .taxonomy import DEFAULT_SEP

__all__ = ["load_catalog", "load_catalog_chunks", "map_catalog"]

_CORE = ["item_id", "title", "image_path", "label"]


def _missing_mask(s: pd.Series) -> np.ndarray:
    """True where a value is NaN/None or a blank string."""
    na = s.isna().to_numpy(dtype=bool)
    blank = s.astype(str).str.strip().eq("").to_numpy(dtype=bool)
    return na | blank


_missing = is_blank     # the one blank-cell rule (datasets.products)


# ---------------------------------------------------------------------------------- catalog
def load_catalog(
    source,
    images_dir=None,
    id: str = "id",
    title: str = "title",
    image: str | None = None,
    path: Sequence[str] | None = None,
    path_col: str | None = None,
    sep: str = DEFAULT_SEP,
    unlabelled: str = "keep",
    taxonomy=None,
) -> pd.DataFrame:
    """Load a product catalog from a CSV file or a DataFrame.

    Parameters
    ----------
    source : str, Path or DataFrame
        The catalog. A CSV is read with pandas' C parser; if some lines have more fields than the
        header (unquoted commas in the title, as in the original Kaggle fashion file), it is re-read
        with the python engine and each such line is repaired by joining the extra fields into the
        title, with a warning and a row in the report. A Parquet (``.parquet``/``.pq``) or Arrow
        (``.arrow``/``.feather``) file is read with pandas. For a catalog too large to hold, see
        :func:`load_catalog_chunks` (the same mapping, chunk by chunk).
    images_dir : str or Path, optional
        Folder of images. With ``image=None`` the image of item ``x`` is
        ``<images_dir>/x.<jpg|jpeg|png|webp>`` (first in that order, extension in any case;
        found per id without listing the folder: :func:`image_paths_for`).
    id, title : str
        Column names of the item id and the product title.
    image : str, optional
        Column holding image paths (relative to ``images_dir`` if given, else to the catalog
        file's folder, else to the working directory). Relative Windows-style paths (``sub\\1.jpg``)
        are accepted on Linux/macOS too.
    path : list of str, optional
        Columns holding the category levels, top level first (``["masterCategory", ...]``).
    path_col : str, optional
        Instead of ``path``: one column holding the full path ``"A > B > C"``.
    sep : str
        Separator of the path segments in ``label`` (and in ``path_col``).
    unlabelled : {"keep", "error"}
        Rows with no category at all (an empty ``path_col``, or every ``path`` level empty):
        ``"keep"`` keeps them with ``label=None`` (products to categorize; listed in the report,
        kept out of training and evaluation by :class:`~semcat_kit.orchestrate.pipeline.Pipeline`),
        ``"error"`` refuses them.
    taxonomy : Taxonomy, list of paths or file, optional
        An external class set (see :func:`semcat_kit.datasets.taxonomy.read_taxonomy`). Labels that are not
        its classes are kept and listed in the report by row, with the closest taxonomy paths
        suggested; the taxonomy is in ``attrs["taxonomy"]``.

    Returns
    -------
    pandas.DataFrame
        ``item_id, title, image_path, label, level_1..level_L`` and the other source columns;
        ``attrs["report"]`` (a :class:`ProblemReport`, ``item_id, column, problem``) lists the kept
        rows with an empty title, a missing image file, no category, or a repaired CSV line.

    Raises
    ------
    FileNotFoundError
        The CSV or the images folder does not exist.
    ValueError
        Missing columns (the message lists the existing ones), an empty catalog, duplicate or
        empty item ids, or an empty category-path segment (the message names the row).
    """
    if unlabelled not in ("keep", "error"):
        raise ValueError(f"unlabelled must be 'keep' or 'error', not {unlabelled!r}")
    csv_dir = None
    repairs: list[dict] = []
    if isinstance(source, pd.DataFrame):
        df = source.copy()
        where = "the DataFrame"
    elif isinstance(source, (str, os.PathLike)):
        p = Path(source).expanduser()
        if p.suffix.lower() in PARQUET_SUFFIXES + ARROW_SUFFIXES:
            if not p.is_file():
                raise FileNotFoundError(f"catalog file {str(p)!r} does not exist; check the path")
            df = CatalogFile(p).read_frame()   # a file that cannot be read: ValueError naming it
        else:
            df = read_csv(p, what="catalog CSV", id_col=id, repair_col=title)
            repairs = [dict(r, column="title") for r in df.attrs.pop("report").to_dict("records")]
        csv_dir = p.resolve().parent
        where = f"{str(p)!r}"
    else:
        raise TypeError(f"source must be a CSV path or a pandas DataFrame (or a Parquet/Arrow file path), not "
                        f"{type(source).__name__}")
    return map_catalog(df, where=where, csv_dir=csv_dir, repairs=repairs, images_dir=images_dir, id=id,
                        title=title, image=image, path=path, path_col=path_col, sep=sep, unlabelled=unlabelled,
                        taxonomy=taxonomy)


def map_catalog(df: pd.DataFrame, *, where: str, csv_dir, repairs: list, images_dir, id, title, image, path,
                 path_col, sep, unlabelled, taxonomy, row0: int = 0,
                 image_rows: np.ndarray | None = None) -> pd.DataFrame:
    """:func:`load_catalog` of a frame already read (all of a catalog, or the chunk starting at row
    ``row0``: row numbers in messages count from the file's first row). ``image_rows``: a mask of
    the rows whose image files are checked (the others: ``image_path`` None, not reported)."""
    df.columns = [str(c).strip() for c in df.columns]
    dup = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dup:
        raise ValueError(f"{where} names column(s) {dup} more than once; rename them so that no column is "
                         "silently ignored")

    if (path is None) == (path_col is None):
        raise ValueError("give exactly one of path=[level columns, top first] or path_col='column with "
                         f"\"A{sep}B\" paths'")
    if path is not None:
        if isinstance(path, str):
            path = [path]
        path = list(path)
        if not path:
            raise ValueError("path must name at least one level column")
    required = [id, title] + (list(path) if path is not None else [path_col]) + ([image] if image else [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{where} has no column(s) {missing}; its columns are {list(df.columns)}. "
                         "Pass the right names with id=, title=, image=, path= or path_col=.")
    if len(df) == 0:
        raise ValueError(f"{where} has no rows: the catalog is empty")

    # ---- ids
    ids_raw = df[id]
    bad = np.flatnonzero(_missing_mask(ids_raw)).tolist()
    if bad:
        raise ValueError(f"{where}: column {id!r} is empty in {len(bad)} row(s) (rows {[row0 + b for b in bad[:10]]}); every "
                         "item needs an id")
    item_id = pd.Series([id_text(v) for v in ids_raw], index=df.index, dtype=object)
    from .._core.contracts import check_id_values, check_unique_ids   # (contracts imports torch: not at import)

    check_id_values(item_id, where=f"{where} column {id!r}", row0=row0)
    check_unique_ids(item_id.to_numpy(), where=where, column=id, row0=row0)

    # ---- category path
    none = np.zeros(len(df), dtype=bool)   # rows with no category at all (unlabelled)
    if path is not None:
        if unlabelled == "keep":
            none = np.logical_and.reduce([_missing_mask(df[c]) for c in path])
        levels = []
        for c in path:
            col = df[c]
            bad = np.flatnonzero(_missing_mask(col) & ~none)
            if len(bad):
                k = int(bad[0])
                raise ValueError(f"{where}: row {row0 + k} (item {item_id.iloc[k]!r}) has an empty category level in "
                                 f"column {c!r} ({len(bad)} such row(s)); every level must be named (fix or "
                                 "drop the rows)")
            col = col.astype(str).str.strip()
            if sep.strip():
                has_sep = np.flatnonzero(col.str.contains(sep.strip(), regex=False).to_numpy(dtype=bool))
                if len(has_sep):
                    k = int(has_sep[0])
                    raise ValueError(f"{where}: row {row0 + k} (item {item_id.iloc[k]!r}) has a category name "
                                     f"containing the separator {sep.strip()!r} in column {c!r}: "
                                     f"{col.iloc[k]!r}; pass another sep=")
            levels.append(col.tolist())
        segments = [() if none[k] else s for k, s in enumerate(zip(*levels))]
    else:
        from .taxonomy import split_path

        empty = _missing_mask(df[path_col])
        if unlabelled == "keep":
            none = empty
        bad = np.flatnonzero(empty & ~none)
        if len(bad):
            k = int(bad[0])
            raise ValueError(f"{where}: row {row0 + k} (item {item_id.iloc[k]!r}) has an empty category path "
                             f"in column {path_col!r} ({len(bad)} such row(s)); fix or drop the rows")
        segments = [() if none[k] else split_path(str(v), sep, where=f" in {where} column {path_col!r}, "
                                                                  f"row {row0 + k} (item {item_id.iloc[k]!r})")
                    for k, v in enumerate(df[path_col].tolist())]
    depth = max(1, max(len(s) for s in segments))
    label = [sep.join(s) if s else None for s in segments]

    report: list[dict] = list(repairs)
    where_cat = repr(path_col) if path_col is not None else f"{list(path)}"
    report += [dict(item_id=item_id.iloc[k], column="label",
                    problem=f"no category in {where_cat}: unlabelled (kept out of training and evaluation; "
                            "it gets a prediction)")
               for k in np.flatnonzero(none)]
    # ---- titles
    no_title = _missing_mask(df[title])
    titles = ["" if t is None else t for t in map(title_text, df[title].tolist())]
    report += [dict(item_id=item_id.iloc[k], column="title", problem="empty title (kept as '')")
               for k in np.flatnonzero(no_title)]

    # ---- images
    image_path: list = [None] * len(df)
    if images_dir is not None:
        images_dir = Path(images_dir).expanduser().resolve()
        if not images_dir.is_dir():
            raise FileNotFoundError(f"images_dir {str(images_dir)!r} is not a folder; check the path")
    if image is None and images_dir is not None:
        rows = np.arange(len(df)) if image_rows is None else np.flatnonzero(image_rows)
        ids = item_id.to_numpy()[rows].tolist()
        found = image_paths_for(ids, images_dir)
        for k, iid, p, regular in zip(rows.tolist(), ids, found.paths, found.is_file.tolist()):
            if regular:
                image_path[k] = p
            elif p is not None:                      # a FIFO, device or folder named like an image
                report.append(dict(item_id=iid, column="image_path", problem=image_problem("not a regular file", p)))
            else:
                report.append(dict(item_id=iid, column="image_path", problem=image_problem(
                    "missing file", f"{images_dir / iid}.<{'|'.join(IMAGE_EXTENSIONS)}>")))
    elif image is not None:
        base = images_dir or csv_dir or Path.cwd()
        rows = enumerate(zip(item_id, df[image].tolist()))
        for k, (iid, v) in tqdm(rows, total=len(df), desc="checking image files", unit="img",
                                disable=len(df) < 20_000):
            if image_rows is not None and not image_rows[k]:
                continue                                  # a row the caller drops: its file is not looked at
            if _missing(v):
                report.append(dict(item_id=iid, column="image_path",
                                   problem=f"{NO_IMAGE_PATH} (column {image!r} is empty)"))
                continue
            p = resolve_image_path(str(v).strip(), base)
            try:
                check_image_file(p)   # a regular file of bounded size: never a FIFO, a device or a folder
                image_path[k] = str(p.resolve())
            except ImageError as e:
                report.append(dict(item_id=iid, column="image_path", problem=image_problem(e.reason, p)))

    # ---- assemble
    out = pd.DataFrame({"item_id": item_id.to_numpy(), "title": titles,
                        "image_path": pd.Series(image_path, dtype=object),
                        "label": pd.Series(label, dtype=object)},
                       index=range(len(df)))
    level_cols = [f"level_{d + 1}" for d in range(depth)]
    for d, c in enumerate(level_cols):
        vals = [s[d] if d < len(s) else None for s in segments]
        out[c] = pd.Series(vals, dtype=object) if None in vals else vals
    consumed = {id, title} | ({image} if image else set()) | ({path_col} if path_col else set())
    extra = [c for c in df.columns if c not in consumed]
    clash = [c for c in extra if c in out.columns]
    if clash:
        raise ValueError(f"{where}: column(s) {clash} would be overwritten by the catalog's own columns "
                         f"{_CORE + level_cols}; rename them first")
    for c in extra:
        out[c] = df[c].to_numpy()
    if taxonomy is not None:
        from .taxonomy import read_taxonomy, suggest_classes

        tax = read_taxonomy(taxonomy, sep=sep)
        known = set(tax.classes) | set(tax.aliases)
        rows = [k for k, lab in enumerate(label) if lab is not None and lab not in known]
        sugg = suggest_classes([label[k] for k in rows], tax) if rows else {}
        report += [dict(item_id=item_id.iloc[k], column="label",
                        problem=f"label {label[k]!r} is not a class of the taxonomy; closest: {sugg[label[k]]}")
                   for k in rows]
        out.attrs["taxonomy"] = tax
    out.attrs["report"] = make_report(report)
    return out


def load_catalog_chunks(
    source,
    chunk_size: int = 65536,
    images_dir=None,
    id: str = "id",
    title: str = "title",
    image: str | None = None,
    path: Sequence[str] | None = None,
    path_col: str | None = None,
    sep: str = DEFAULT_SEP,
    unlabelled: str = "keep",
    taxonomy=None,
    keep=None,
):
    """:func:`load_catalog` of a catalog file, ``chunk_size`` rows at a time: memory bounded by a chunk.

    The file (CSV/TSV, Parquet or Arrow, or a :class:`CatalogFile` of one, whose CSV check pass is then
    not repeated; every column read as text) is read
    chunk by chunk and each chunk gets exactly what :func:`load_catalog` does to a catalog (the same
    code): the column mapping, the id / category checks, stripped titles, image paths resolved
    against ``images_dir`` or the file's folder (and checked), the report. Across chunks, an id seen
    in an earlier chunk is the same ``ValueError`` as a duplicate within one (ids are remembered as
    64-bit hashes, :class:`semcat_kit._core.contracts.SeenIds`, in memory-mapped files beyond 2^18 ids); row numbers in messages count from the
    file's first data row.

    ``keep``: optional ``keep(first_row, n_rows) -> bool mask`` of the chunk's rows to yield (a share
    of the catalog: ``semcat encode`` under torchrun). Every row is still checked (ids, categories:
    the same errors in every process) but only kept rows have their image files looked at.

    Yields
    ------
    (DataFrame, int)
        A catalog frame (index: the rows' positions in the file; ``level_*`` columns as deep as that
        chunk's paths; ``attrs["report"]`` lists that chunk's problems, repaired CSV lines included)
        and the chunk's first row.
    """
    from .._core.contracts import check_unique_ids
    from .._core.seen_ids import SeenIds
    from .taxonomy import read_taxonomy

    if unlabelled not in ("keep", "error"):
        raise ValueError(f"unlabelled must be 'keep' or 'error', not {unlabelled!r}")
    cf = source if isinstance(source, CatalogFile) else \
        CatalogFile(source, what="catalog CSV" if Path(source).suffix.lower() in CSV_SUFFIXES else "catalog file",
                    id_col=id, repair_col=title)
    where = f"{str(cf.path)!r}"
    if images_dir is not None:
        images_dir = Path(images_dir).expanduser().resolve()
        if not images_dir.is_dir():
            raise FileNotFoundError(f"images_dir {str(images_dir)!r} is not a folder; check the path")
    if taxonomy is not None:
        taxonomy = read_taxonomy(taxonomy, sep=sep)
    seen = SeenIds()
    csv_dir = cf.path.resolve().parent
    for df, first in cf.chunks(chunk_size):
        repairs = [dict(r, column="title") for r in df.attrs.pop("report").to_dict("records")]
        rows = None if keep is None else np.asarray(keep(first, len(df)), dtype=bool)
        out = map_catalog(df, where=where, csv_dir=csv_dir, repairs=repairs, images_dir=images_dir, id=id,
                           title=title, image=image, path=path, path_col=path_col, sep=sep, unlabelled=unlabelled,
                           taxonomy=taxonomy, row0=first, image_rows=rows)
        check_unique_ids(out["item_id"].to_numpy(), where=where, column=id, seen=seen, row0=first)
        out.index = pd.RangeIndex(first, first + len(out))
        if rows is not None:
            report = out.attrs.get("report")
            out = out[rows]
            if report is not None and len(report):
                out.attrs["report"] = make_report(report[report["item_id"].isin(set(out["item_id"]))]
                                                   .to_dict("records"))
        yield out, first
