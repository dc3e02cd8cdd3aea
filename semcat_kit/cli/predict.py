"""``semcat predict``: categorize the products of a CSV / Parquet file with an exported head, read,
scored and written ``--chunk-size`` rows at a time."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .common import CliError, check_device

__all__ = ["run", "read_products", "input_chunks", "product_chunks", "DEFAULT_CHUNK_SIZE"]

#: Default --chunk-size of ``semcat predict`` (= semcat_kit.ship.predictor.DEFAULT_CHUNK_SIZE; not
#: imported, to keep ``semcat --help`` free of torch).
DEFAULT_CHUNK_SIZE = 8192


def read_products(args, df: pd.DataFrame | None = None, first_row: int = 0) -> pd.DataFrame:
    """Products of ``--input`` (or of ``df``, the rows ``first_row..`` of it read by ``input_chunks``)."""
    p = Path(args.input).expanduser()
    if df is None:
        from ..datasets import read_csv

        if not p.is_file():
            raise CliError(f"--input {args.input}: no such file")
        try:   # the package's one CSV reader: BOM, encoding, long fields, duplicate columns, malformed lines
            df = read_csv(p, what="--input", id_col=args.id_col or "id", repair_col=args.title_col or "title",
                          dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, ValueError) as e:
            raise CliError(str(e).splitlines()[0]) from None
        for r in df.attrs["report"].itertuples():
            print(f"  {r.item_id}: {r.problem}", file=sys.stderr)
    cols = list(df.columns)

    def column(opt: str, given, default):
        name = given if given is not None else default
        if name in cols:
            return name
        if given is not None:
            raise CliError(f"--input {args.input} has no column {given!r} (from {opt}); its columns are {cols}")
        return None

    id_col = column("--id-col", args.id_col, "id")
    title_col = column("--title-col", args.title_col, "title")
    image_col = column("--image-col", args.image_col, "image")
    images = Path(args.images).expanduser() if args.images else None
    if images is not None and not images.is_dir():
        raise CliError(f"--images {args.images}: no such folder")
    if title_col is None and image_col is None and images is None:
        raise CliError(f"--input {args.input} has neither a title column ('title', or --title-col) nor an image "
                       f"column ('image', or --image-col) and no --images folder; its columns are {cols}")
    ids = (df[id_col] if id_col is not None
           else pd.Series([str(i) for i in range(first_row, first_row + len(df))], index=df.index))
    if id_col is not None and ids.isna().any():
        raise CliError(f"--input {args.input}: column {id_col!r} is empty at line(s) "
                       f"{[int(i) + 2 + first_row for i in np.flatnonzero(ids.isna().to_numpy())[:10]]}")
    out = pd.DataFrame({"item_id": ids.astype(str).to_numpy()})      # verbatim (issue 25: never changed quietly)
    from .._core.contracts import check_id_values

    try:
        check_id_values(out["item_id"], where=f"--input {args.input} column {id_col!r}", row0=first_row + 2,
                        row_word="line")
    except ValueError as e:
        raise CliError(str(e)) from None
    dup = out["item_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        first = out["item_id"][dup].iloc[0]
        lines = [int(i) + 2 + first_row for i in np.flatnonzero(out["item_id"].to_numpy() == first)[:10]]
        raise CliError(f"--input {args.input}: column {id_col!r} repeats id {first!r} (lines {lines}; "
                       f"{int(out['item_id'][dup].nunique())} repeated id(s) in all); ids must be unique, "
                       "or pass --id-col with a unique column")
    if title_col is not None:
        out["title"] = df[title_col].where(df[title_col].notna(), None).to_numpy(dtype=object)
    base = images if images is not None else p.resolve().parent
    if image_col is not None:
        paths = []
        for v in df[image_col].tolist():
            if v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip():
                paths.append(None)
            else:
                q = Path(str(v).strip()).expanduser()
                paths.append(str(q if q.is_absolute() else base / q))
        out["image_path"] = paths
    elif images is not None:
        from ..datasets import image_paths_for

        # the image of each id as load_catalog(images_dir=) finds it (per id, no folder listing); an
        # entry that is not a regular file (a FIFO, a folder) is passed on: encoding reports it
        out["image_path"] = image_paths_for(out["item_id"].tolist(), images).paths
    return out


def input_chunks(args, chunk_size: int):
    """Raw frames of ``--input`` (all columns as strings, None where empty), ``chunk_size`` rows at a
    time, read by the package's one chunked reader (:class:`semcat_kit.datasets.readers.CatalogFile`): CSV
    (malformed lines repaired and printed) or Parquet (``.parquet``/``.pq``); ``.tsv`` and
    ``.arrow``/``.feather`` too. Yields ``(frame, first_row)``."""
    from ..datasets.readers import ARROW_SUFFIXES, CSV_SUFFIXES, PARQUET_SUFFIXES, CatalogFile, text_frame

    p = Path(args.input).expanduser()
    if not p.is_file():
        raise CliError(f"--input {args.input}: no such file")
    known = p.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES
    try:
        f = CatalogFile(p, what="--input", id_col=args.id_col or "id", repair_col=args.title_col or "title",
                        csv_options=dict(dtype=str, keep_default_na=False, na_values=[""]),
                        format=None if known else "csv")
        chunks = f.chunks(chunk_size)
        while True:
            with warnings.catch_warnings():        # only around the read: repairs are printed below, once
                warnings.simplefilter("ignore")
                try:
                    df, first = next(chunks)
                except StopIteration:
                    break
            for r in df.attrs["report"].itertuples():
                print(f"  {r.item_id}: {r.problem}", file=sys.stderr)
            df.attrs.clear()
            yield text_frame({c: df[c].to_numpy(dtype=object) for c in df.columns}, df.index,
                              empty_is_missing=True), first
    except (pd.errors.ParserError, ValueError) as e:
        raise CliError(str(e).splitlines()[0]) from None


def product_chunks(args, chunk_size: int):
    """``read_products`` of each input chunk (column checks, ids, image paths per chunk)."""
    for df, first in input_chunks(args, chunk_size):
        yield read_products(args, df, first)


def _repeated_id_error(args, dup_id: str) -> CliError:
    """The error ``read_products`` gives, for an id repeated in different chunks (the input is read
    again to name the lines: only on this error path)."""
    lines, repeated, seen = [], set(), set()
    for df, first in input_chunks(args, 65536):
        for i, v in enumerate(read_products(args, df, first)["item_id"].tolist()):
            if v == dup_id and len(lines) < 10:
                lines.append(first + i + 2)
            if v in seen:
                repeated.add(v)
            seen.add(v)
    return CliError(f"--input {args.input}: column {args.id_col or 'id'!r} repeats id {dup_id!r} (lines {lines}; "
                    f"{len(repeated)} repeated id(s) in all); ids must be unique, or pass --id-col with a unique "
                    "column")


def run(args) -> int:
    from ..ship.predictor import DuplicateIdError, Predictor, write_predictions

    if args.top_k < 1:
        raise CliError(f"--top-k must be >= 1, not {args.top_k}")
    if args.chunk_size < 1:
        raise CliError(f"--chunk-size must be >= 1, not {args.chunk_size}")
    check_device(args.device)
    precision = getattr(args, "precision", None)
    if precision is not None and not 0 < precision < 1:
        raise CliError(f"--precision must lie strictly between 0 and 1 (e.g. 0.98), not {precision:g}")
    out = Path(args.output).expanduser()
    if out.is_dir():
        raise CliError(f"--output {args.output} is a folder; give a file name such as {out / 'predictions.csv'}")
    chunks = product_chunks(args, args.chunk_size)
    first = next(chunks)            # bad input (file, columns, ids of the first chunk) fails before loading
    pred = Predictor.load(args.model, device=args.device, backend=args.backend,
                          expected_sha256=args.expected_sha256)

    def products():
        yield first
        yield from chunks
    try:
        frames = pred.predict_iter(products(), top_k=args.top_k, crm=args.crm, cache_dir=args.cache_dir,
                                   progress=not args.quiet, chunk_size=args.chunk_size, precision=precision)
    except ValueError as e:     # no calibrated thresholds, or none for this precision
        raise CliError(f"--precision {precision:g}: {e}") from None
    try:
        n = write_predictions(frames, out)
    except DuplicateIdError as e:
        raise _repeated_id_error(args, e.ids[0]) from None
    except OSError as e:         # a full or read-only disk under --output: one line naming it
        detail = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        raise CliError(f"--output {args.output}: the predictions could not be written ({detail}); nothing was "
                       "written there (no half-written file). Free space or give another --output") from None
    fails = pred.failures
    print(f"wrote {n} predictions to {out} ({len(fails)} unusable input(s))")
    if precision is not None:
        print(f"hedged at precision {precision:g} (threshold {pred.hedging.threshold(precision):.4f}; "
              f"{pred.hedging.guarantee(precision)}): see the node, is_leaf and needs_review columns")
    for _, r in fails.head(10).iterrows():
        print(f"  {r['item_id']}: {r['modality']}: {r['reason']}", file=sys.stderr)
    if len(fails) > 10:
        print(f"  ... and {len(fails) - 10} more (see the 'failures' column)", file=sys.stderr)
    return 0
