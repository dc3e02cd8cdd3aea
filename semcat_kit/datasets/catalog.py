"""Loading catalogs: a generic CSV/DataFrame + image folder, the Kaggle fashion layout, the bundled
tutorial catalog, and the Google Product Taxonomy file.

Every catalog loader returns a :class:`pandas.DataFrame` with the columns

``item_id`` (str), ``title`` (str, ``""`` where missing), ``image_path`` (absolute str, or ``None``
when there is no image file), ``label`` (the full category path ``"A > B > C"``),
``level_1 .. level_L`` (one column per taxonomy level), then every other column of the source.

Catalog files too large to hold are read in chunks: :class:`CatalogFile` (CSV/TSV, Parquet, Arrow;
every column as text) is the package's one chunked reader, and :func:`load_catalog_chunks` applies
:func:`load_catalog`'s mapping to each chunk.

Rows that are kept but are not fully usable (an empty title, a missing image file, a malformed
CSV line that was repaired) are listed in ``df.attrs["report"]``, a :class:`ProblemReport`
DataFrame with columns ``item_id, column, problem``. Nothing is dropped silently.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import re
import stat
import sys
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._core.memory import release_freed_memory
from .images import ImageError, check_image_file
from .taxonomy import DEFAULT_SEP, load_google_taxonomy  # noqa: F401  (re-exported: sk.datasets.load_google_taxonomy)

__all__ = [
    "load_catalog",
    "read_csv",
    "read_csv_chunks",
    "CatalogFile",
    "iter_catalog_chunks",
    "load_catalog_chunks",
    "load_fashion",
    "load_fashion_tutorial",
    "load_google_taxonomy",
    "ProblemReport",
    "IMAGE_EXTENSIONS",
    "image_paths_for",
    "ImageFiles",
    "FASHION_PATH_COLUMNS",
    "tutorial_dir",
]

#: File extensions tried (in this order) when images are found by item id.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
#: The Kaggle "Fashion Product Images" columns that form the category path.
FASHION_PATH_COLUMNS = ("masterCategory", "subCategory", "articleType")
REPORT_COLUMNS = ["item_id", "column", "problem"]
_CORE = ["item_id", "title", "image_path", "label"]


class ProblemReport(pd.DataFrame):
    """A DataFrame ``item_id, column, problem`` of rows that were kept but need attention.

    It is an ordinary DataFrame except that ``==`` between two reports compares the whole tables
    and returns one bool; pandas compares ``attrs`` that way when it concatenates or merges the
    catalogs that carry a report (a plain DataFrame there makes ``pd.concat`` raise).
    """

    @property
    def _constructor(self):
        return ProblemReport

    def __eq__(self, other):  # type: ignore[override]
        if isinstance(other, pd.DataFrame):
            return bool(pd.DataFrame(self).equals(pd.DataFrame(other)))
        return super().__eq__(other)

    def __ne__(self, other):  # type: ignore[override]
        if isinstance(other, pd.DataFrame):
            return not self.__eq__(other)
        return super().__ne__(other)

    __hash__ = None  # type: ignore[assignment]


def _make_report(rows: list[dict]) -> ProblemReport:
    rep = ProblemReport(pd.DataFrame(rows, columns=REPORT_COLUMNS))
    rep["item_id"] = rep["item_id"].astype(object)
    return rep


# ---------------------------------------------------------------------------------- CSV reading
#: the csv module's per-field limit while this package reads a CSV (its default, 131072 characters,
#: makes a long description field a crash)
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


@contextlib.contextmanager
def _field_limit():
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, _FIELD_LIMIT))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def read_csv(path, *, what: str = "CSV", id_col: str | None = None, repair_col: str | None = None,
             **pandas_kw) -> pd.DataFrame:
    """Read a CSV file the way every CSV of this package is read.

    Guarantees: a UTF-8 byte-order mark is dropped; text that is not UTF-8 is a ``ValueError``
    naming the file and the offset; no field is too long (the csv module's 128 KiB field limit is
    lifted); header names are stripped and a name given twice is a ``ValueError`` naming it (pandas
    would rename the second one ``x.1``); a line with more fields than the header -- including the
    *first* data line, which pandas would silently turn into an index, shifting every column -- is
    repaired by joining the extra fields into ``repair_col`` (listed in ``attrs["report"]`` and in
    a warning) or, without such a column, is a ``ValueError`` naming the lines.

    Parameters
    ----------
    path : str or Path
    what : str
        How the file is named in messages (``"catalog CSV"``, ``"--input"``).
    id_col : str, optional
        Column naming each row in the report.
    repair_col : str, optional
        Free-text column that absorbs the extra fields of a malformed line (the title).
    **pandas_kw
        Passed to :func:`pandas.read_csv` (``dtype``, ``keep_default_na``, ``index_col`` ...).

    Returns
    -------
    pandas.DataFrame
        ``attrs["report"]``: a :class:`ProblemReport` of the repaired lines.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; check the path")
    with _field_limit():
        df, repairs = _read_csv(path, id_col=id_col, title_col=repair_col, what=what, kw=pandas_kw)
    df.attrs["report"] = _make_report(repairs)
    return df


def read_csv_chunks(path, chunksize: int, *, what: str = "CSV", id_col: str | None = None,
                    repair_col: str | None = None, usecols: Sequence[str] | None = None, **pandas_kw):
    """:func:`read_csv`, ``chunksize`` rows at a time: yields ``(DataFrame, first_row)``.

    Same guarantees, memory bounded by one chunk: the header is checked first (BOM, encoding,
    duplicate names), then one pass checks every line (pandas' C parser; for a file with lines to
    repair, the csv module, which also finds the lines that cannot be repaired): a file that cannot
    be read raises its ``ValueError`` before any chunk is yielded. A well-formed file is then
    streamed by pandas; a file with malformed lines is streamed through the csv module, each line
    repaired as :func:`read_csv` does (one warning for the file; each chunk's ``attrs["report"]``
    lists the lines repaired in that chunk). Row indexes continue across chunks. A header without
    rows yields one empty frame. ``usecols``: read only these columns (header names).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; check the path")
    kw = dict(pandas_kw)
    delim = _delimiter(kw)
    with _field_limit():
        names, repair = _csv_check(path, what=what, id_col=id_col, title_col=repair_col, delim=delim)
    yield from _csv_stream(path, chunksize, names, repair, what=what, id_col=id_col, repair_col=repair_col,
                           usecols=usecols, kw=kw)


def _csv_stream(path: Path, chunksize: int, names: list, repair: bool, *, what, id_col, repair_col, usecols, kw):
    """:func:`read_csv_chunks` after its check pass (``names, repair`` from :func:`_csv_check`)."""
    kw = dict(kw)
    delim = _delimiter(kw)
    pos = None
    if usecols is not None:
        missing = [c for c in usecols if c not in names]
        if missing:
            raise ValueError(f"{what} {str(path)!r} has no column(s) {missing}; its columns are {names}")
        pos = sorted(names.index(c) for c in usecols)
        kw["usecols"] = pos
    cols = names if pos is None else [names[i] for i in pos]
    first = 0
    with _field_limit():
        if not repair:
            try:
                reader = pd.read_csv(path, engine="c", on_bad_lines="error", encoding="utf-8-sig",
                                     chunksize=chunksize, **kw)
                for df in reader:
                    df.columns = cols
                    df.attrs["report"] = _make_report([])
                    yield df, first
                    first += len(df)
            except UnicodeDecodeError as e:            # the file changed since the check
                raise _not_utf8(path, e, what) from e
        else:
            yield from _repaired_chunks(path, chunksize, names=names, cols=cols, what=what, id_col=id_col,
                                        title_col=repair_col, delim=delim, kw=kw)
            return
    if first == 0:
        yield pd.DataFrame({c: pd.Series([], dtype=object) for c in cols}), 0


def _delimiter(kw: dict) -> str:
    d = kw.get("sep", kw.get("delimiter"))
    if d is None:
        kw["sep"] = d = ","
    if not isinstance(d, str) or len(d) != 1:
        raise ValueError(f"read_csv_chunks reads one-character separators, not {d!r}")
    return d


def _csv_head(path: Path, what: str, delim: str = ","):
    """Header names (stripped) and the first data record, with the file-level checks of read_csv."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            records = csv.reader(f, delimiter=delim)
            header = next(records, [])
            first = next((r for r in records if r), [])  # the first data record (pandas skips blank lines)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e, what) from e
    except csv.Error as e:
        raise ValueError(f"{what} {str(path)!r} is not readable as CSV ({e}); check the quoting") from e
    header = [h.strip() for h in header]
    if not header or not any(header):
        raise ValueError(f"{what} {str(path)!r} is empty (no header line); it needs a header row "
                         "naming the columns")
    dups = {h: [k for k, x in enumerate(header) if x == h] for h in header if header.count(h) > 1}
    if dups:
        shown = ", ".join(f"{h!r} (columns {[k + 1 for k in ks]})" for h, ks in dups.items())
        raise ValueError(f"{what} {str(path)!r} names a column more than once: {shown}; rename them so "
                         "that no column is silently renamed or ignored")
    return header, first


class _LineFixer:
    """Repairs a CSV record with more fields than the header (see :func:`read_csv`): trailing empty
    fields (a trailing comma) are dropped; otherwise the title held unquoted separators and the extra
    fields are joined back into it. ``keep=False`` counts repairs (and keeps 10 ids) instead of
    listing them all."""

    def __init__(self, header, id_col, title_col, delim: str = ",", keep: bool = True):
        self.n, self.delim, self.keep, self.title_col = len(header), delim, keep, title_col
        self.ti = header.index(title_col) if title_col in header else None
        self.ii = header.index(id_col) if id_col in header else None
        self.repairs: list[dict] = []
        self.count, self.ids, self.count_bad = 0, [], 0
        self.bad_lines: list[list[str]] = []

    def __call__(self, fields: list[str]):
        n = self.n
        while len(fields) > n and not fields[-1].strip():
            fields = fields[:-1]
        if len(fields) == n:
            return fields
        extra = len(fields) - n
        item = fields[self.ii] if self.ii is not None and self.ii < len(fields) else "?"
        if self.ti is None or extra <= 0:
            if len(self.bad_lines) < 3:
                self.bad_lines.append(fields)
            self.count_bad += 1
            return None
        ti = self.ti
        joined = self.delim.join(fields[ti:ti + extra + 1])
        self.count += 1
        if len(self.ids) < 10:
            self.ids.append(str(item).strip())
        if self.keep:
            self.repairs.append(dict(item_id=str(item).strip(), column=self.title_col,
                                     problem=f"malformed CSV line ({len(fields)} fields for {n} columns): "
                                             f"the {extra + 1} fields from column {self.title_col!r} were joined "
                                             f"into {joined!r}"))
        return fields[:ti] + [joined] + fields[ti + extra + 1:]

    def raise_bad(self, path: Path, what: str) -> None:
        if self.bad_lines:
            shown = "; ".join(",".join(b)[:120] for b in self.bad_lines[:3])
            raise ValueError(f"{what} {str(path)!r}: {self.count_bad} line(s) have more fields than the "
                             f"{self.n} header columns and cannot be repaired (no {self.title_col!r} column to "
                             f"join them into): {shown}. Quote those fields or fix the file.")

    def warn(self, path: Path, stacklevel: int) -> None:
        if self.count:
            warnings.warn(f"{path}: repaired {self.count} malformed line(s) by joining extra fields into "
                          f"{self.title_col!r} (items {self.ids}); see df.attrs['report']", stacklevel=stacklevel)


def _csv_check(path: Path, *, what: str, id_col, title_col, delim: str):
    """One pass over a CSV: ``(column names, needs repair)``; raises what :func:`read_csv` raises
    (and warns once about the lines it will repair) before anything is read into memory."""
    header, first = _csv_head(path, what, delim)
    names = [h if h else f"Unnamed: {k}" for k, h in enumerate(header)]   # pandas' names for blank headers
    repair = len(first) > len(header)       # pandas would turn such a first line into an index
    if not repair:
        try:   # chunks of 8192 rows: the pass holds one (65536 rows of every column was ~100 MB)
            for _ in pd.read_csv(path, engine="c", on_bad_lines="error", encoding="utf-8-sig", chunksize=8192,
                                 dtype=str, sep=delim):
                pass
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError):
            repair = True
        release_freed_memory()
    if repair:   # the csv module: find every line to repair, or the first that cannot be
        fixer = _LineFixer(header, id_col, title_col, delim, keep=False)
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                for k, fields in enumerate(csv.reader(f, delimiter=delim)):
                    if k and len(fields) > fixer.n:
                        fixer(fields)
        except UnicodeDecodeError as e:
            raise _not_utf8(path, e, what) from e
        except csv.Error as e:
            raise ValueError(f"{what} {str(path)!r} is not readable as CSV ({e}); check the quoting") from e
        fixer.raise_bad(path, what)
        fixer.warn(path, stacklevel=4)
    return names, repair


def _repaired_chunks(path: Path, chunksize: int, *, names, cols, what, id_col, title_col, delim, kw):
    """A CSV with malformed lines, ``chunksize`` records at a time: each line repaired by the csv
    module, each chunk parsed by pandas (so values come out as from a well-formed file)."""
    header, _ = _csv_head(path, what, delim)
    fixer = _LineFixer(header, id_col, title_col, delim)
    first, held = 0, []

    def parse(rows):
        buf = io.StringIO()
        out = csv.writer(buf, delimiter=delim, lineterminator="\n")
        out.writerow(names)
        out.writerows(rows)
        buf.seek(0)
        df = pd.read_csv(buf, engine="c", on_bad_lines="error", **kw)
        df.columns = cols
        df.index = pd.RangeIndex(first, first + len(df))
        df.attrs["report"] = _make_report(fixer.repairs)
        fixer.repairs = []
        return df

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            records = csv.reader(f, delimiter=delim)
            next(records, None)
            for fields in records:
                if not fields:                        # a blank line (pandas skips them too)
                    continue
                if len(fields) > fixer.n:
                    fields = fixer(fields)
                    if fields is None:                # the file changed since the check
                        fixer.raise_bad(path, what)
                held.append(fields)
                if len(held) == chunksize:
                    df = parse(held)
                    held = []
                    yield df, first
                    first += len(df)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e, what) from e
    except csv.Error as e:
        raise ValueError(f"{what} {str(path)!r} is not readable as CSV ({e}); check the quoting") from e
    if held or first == 0:
        yield parse(held), first


def _read_csv(path: Path, *, id_col, title_col, what: str, kw: dict):
    """:func:`read_csv` without the field-limit context; returns ``(DataFrame, repair rows)``."""
    delim = _delimiter(kw)
    header, first = _csv_head(path, what, delim)
    fixer = _LineFixer(header, id_col, title_col, delim)
    n = fixer.n
    kw = dict(kw)
    if id_col is not None and "dtype" not in kw:
        kw["dtype"] = {id_col: str}
    try:
        # a first data line with too many fields makes pandas take the first column(s) as the index
        # (shifting every column) instead of failing: repair it like any other bad line
        malformed = len(first) > n
        if not malformed:
            try:  # the fast C parser for well-formed files ...
                df = pd.read_csv(path, engine="c", on_bad_lines="error", encoding="utf-8-sig", **kw)
            except pd.errors.ParserError:
                malformed = True
        if malformed:  # ... for the others, repair the lines with the csv module, then parse as usual
            buf = io.StringIO()
            out = csv.writer(buf, delimiter=delim, lineterminator="\n")
            with open(path, encoding="utf-8-sig", newline="") as f:
                for k, fields in enumerate(csv.reader(f, delimiter=delim)):
                    if k and len(fields) > n:
                        fields = fixer(fields)
                        if fields is None:
                            continue
                    out.writerow(fields)
            buf.seek(0)
            df = pd.read_csv(buf, engine="c", on_bad_lines="error", **kw)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e, what) from e
    except csv.Error as e:
        raise ValueError(f"{what} {str(path)!r} is not readable as CSV ({e}); check the quoting") from e
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{what} {str(path)!r} has no columns ({e})") from e
    fixer.raise_bad(path, what)
    fixer.warn(path, stacklevel=5)
    df.columns = [str(c).strip() for c in df.columns]
    return df, fixer.repairs


def _not_utf8(path: Path, e: UnicodeDecodeError, what: str = "catalog CSV") -> ValueError:
    return ValueError(f"{what} {str(path)!r} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at "
                      f"offset {e.start}); save it as UTF-8, or read it yourself with "
                      "pandas.read_csv(path, encoding=...) and pass the DataFrame to load_catalog")


# ---------------------------------------------------------------------------------- catalog files in chunks
#: File name endings of the catalog files :class:`CatalogFile` reads.
CSV_SUFFIXES, PARQUET_SUFFIXES, ARROW_SUFFIXES = (".csv", ".tsv"), (".parquet", ".pq"), (".arrow", ".feather", ".ipc")


class CatalogFile:
    """A catalog file read in chunks of rows, every column as text: the package's one chunked reader.

    CSV (``.csv``; ``.tsv`` tab-separated) goes through :func:`read_csv_chunks` (BOM, encoding,
    duplicate header names, malformed lines repaired into ``repair_col`` and reported, memory
    bounded by a chunk); Parquet (``.parquet``/``.pq``) and Arrow IPC / Feather
    (``.arrow``/``.feather``/``.ipc``) are read in record batches with pyarrow, re-cut into chunks
    of exactly ``chunk_size`` rows (the last may be shorter). Every value is a ``str`` or None
    (missing): ids like ``00123`` stay ``00123``, numbers become their text.

    Parameters
    ----------
    path : str or Path
    what : str
        How the file is named in messages (``"catalog file"``, ``"--input"``).
    id_col, repair_col : str, optional
        CSV only: the column naming a repaired line in the report, and the free-text column that
        absorbs the extra fields of a malformed line (the title).
    csv_options : dict, optional
        CSV only: :func:`pandas.read_csv` options; default ``dtype=str`` with pandas' missing-value
        strings (``""``, ``NA``, ``null`` ...). ``.tsv`` adds ``sep="\t"``.
    format : {"csv", "parquet", "arrow"}, optional
        The file type when its name does not tell (default: from the suffix).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        An unknown file type, or a file that cannot be read (naming the file, the column when one
        is concerned, and what to do).

    Examples
    --------
    >>> for df, first_row in CatalogFile("products.parquet").chunks(65536, ["item_id", "title"]):  # doctest: +SKIP
    ...     ...
    """

    def __init__(self, path, *, what: str = "catalog file", id_col: str | None = None,
                 repair_col: str | None = None, csv_options: dict | None = None, format: str | None = None):
        self.path = Path(path).expanduser()
        self.what = what
        if not self.path.is_file():
            raise FileNotFoundError(f"{what} {str(self.path)!r} does not exist; check the path")
        suf = self.path.suffix.lower()
        if format is not None:
            kinds = {"csv": "CSV", "parquet": "Parquet", "arrow": "Arrow"}
            if format not in kinds:
                raise ValueError(f"format must be one of {list(kinds)} or None, not {format!r}")
            self.kind = kinds[format]
        elif suf not in CSV_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES:
            raise ValueError(f"{what} {str(self.path)!r}: unknown format {suf!r}; give a .parquet, .arrow/.feather "
                             "or .csv/.tsv file (or load it yourself and pass a DataFrame)")
        else:
            self.kind = "CSV" if suf in CSV_SUFFIXES else "Parquet" if suf in PARQUET_SUFFIXES else "Arrow"
        self.id_col, self.repair_col = id_col, repair_col
        self._csv_plan = None
        self.csv_options = dict(dtype=str) if csv_options is None else dict(csv_options)
        if suf == ".tsv":
            self.csv_options.setdefault("sep", "\t")
        if self.kind == "CSV":
            with _field_limit():
                header, _ = _csv_head(self.path, what, _delimiter(dict(self.csv_options)))
            self.columns = [h if h else f"Unnamed: {k}" for k, h in enumerate(header)]
        else:
            with self._readable():
                self.columns = list(self._schema().names)

    def __repr__(self) -> str:
        return f"CatalogFile({str(self.path)!r}, {self.kind}, columns={self.columns})"

    # ------------------------------------------------------------------ pyarrow side
    @contextlib.contextmanager
    def _readable(self, columns=None):
        """pyarrow's read errors as a ``ValueError`` naming the file (and columns) and what to do."""
        import pyarrow as pa

        try:
            yield
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as e:
            col = f" (column(s) {list(columns)})" if columns else ""
            raise ValueError(f"{self.what} {self.path}{col}: not a readable {self.kind} file "
                             f"({str(e).splitlines()[0]}); fix or re-export the file, or read it yourself "
                             "and pass a DataFrame") from None

    def _schema(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.kind == "Parquet":
            return pq.ParquetFile(self.path).schema_arrow
        with pa.memory_map(str(self.path), "r") as mm:
            return pa.ipc.open_file(mm).schema

    def _batches(self, columns):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.kind == "Parquet":
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=65536, columns=columns)
        else:
            with pa.memory_map(str(self.path), "r") as mm:
                r = pa.ipc.open_file(mm)
                for k in range(r.num_record_batches):
                    b = r.get_batch(k)
                    yield b.select(columns)

    def _as_text(self, table):
        import pyarrow as pa

        cols = []
        for name, col in zip(table.column_names, table.columns):
            if not pa.types.is_string(col.type):
                try:   # ids / titles stored as numbers: read as text (large_string: one type for every file)
                    col = col.cast(pa.string())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                    raise ValueError(f"{self.what} {str(self.path)!r}: column {name!r} of type {col.type} cannot "
                                     f"be read as text ({str(e).splitlines()[0]}); store it as strings") from None
            cols.append(col)
        return pa.table(cols, names=table.column_names)

    def _arrow_chunks(self, chunk_size: int, columns):
        import pyarrow as pa

        held, rows = [], 0
        with self._readable(columns):
            for b in self._batches(columns):
                if not b.num_rows:
                    continue
                held.append(pa.Table.from_batches([b]))
                rows += b.num_rows
                while rows >= chunk_size:
                    t = pa.concat_tables(held) if len(held) > 1 else held[0]
                    yield self._as_text(t.slice(0, chunk_size))
                    rest = t.slice(chunk_size)
                    held, rows = ([rest] if rest.num_rows else []), rest.num_rows
            if rows:
                yield self._as_text(pa.concat_tables(held) if len(held) > 1 else held[0])

    # ------------------------------------------------------------------ public
    def _columns(self, columns):
        if columns is None:
            return list(self.columns)
        columns = [columns] if isinstance(columns, str) else list(columns)
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise ValueError(f"{self.what} {str(self.path)!r} has no column(s) {missing}; its columns are "
                             f"{self.columns}")
        return columns

    def chunks(self, chunk_size: int, columns=None, *, arrow: bool = False):
        """Yield ``(chunk, first_row)``: the rows ``first_row .. first_row + len(chunk)`` in order.

        Parameters
        ----------
        chunk_size : int
            Rows per chunk (memory grows with it, not with the file).
        columns : str or list of str, optional
            Read only these columns (in this order); default all.
        arrow : bool
            Yield ``pyarrow.Table`` chunks of string columns instead of DataFrames (object columns of
            ``str`` / None, index ``first_row..``). A CSV chunk's ``attrs["report"]`` (DataFrame only)
            lists the lines repaired in it.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, not {chunk_size!r}")
        cols = self._columns(columns)
        first = 0
        if self.kind == "CSV":
            if self._csv_plan is None:       # one check pass per file, however many column passes follow
                with _field_limit():
                    self._csv_plan = _csv_check(self.path, what=self.what, id_col=self.id_col,
                                                title_col=self.repair_col,
                                                delim=_delimiter(dict(self.csv_options)))
            for df, first in _csv_stream(self.path, int(chunk_size), *self._csv_plan, what=self.what,
                                         id_col=self.id_col, repair_col=self.repair_col, usecols=cols,
                                         kw=self.csv_options):
                report = df.attrs.get("report")
                df = _text_frame({c: df[c].to_numpy(dtype=object) for c in cols}, df.index)
                if arrow:
                    import pyarrow as pa

                    yield pa.table({c: pa.array(df[c].tolist(), pa.string()) for c in cols}), first
                else:
                    df.attrs["report"] = report if report is not None else _make_report([])
                    yield df, first
            return
        seen = False
        for t in self._arrow_chunks(int(chunk_size), cols):
            seen = True
            if arrow:
                yield t, first
            else:
                df = _text_frame({c: t.column(c).to_numpy(zero_copy_only=False) for c in cols},
                                 pd.RangeIndex(first, first + t.num_rows))
                df.attrs["report"] = _make_report([])
                yield df, first
            first += t.num_rows
        if not seen:
            if arrow:
                import pyarrow as pa

                yield pa.table({c: pa.array([], pa.string()) for c in cols}), 0
            else:
                df = pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
                df.attrs["report"] = _make_report([])
                yield df, 0

    def num_rows(self) -> int:
        """Rows of the file (Parquet: from its metadata; CSV: one pass, as :meth:`chunks` counts them)."""
        if self.kind == "Parquet":
            import pyarrow.parquet as pq

            with self._readable():
                return int(pq.ParquetFile(self.path).metadata.num_rows)
        if self.kind == "Arrow":
            import pyarrow as pa

            with self._readable(), pa.memory_map(str(self.path), "r") as mm:
                r = pa.ipc.open_file(mm)
                return int(sum(r.get_batch(k).num_rows for k in range(r.num_record_batches)))
        n = 0
        for df, first in self.chunks(65536, self.columns[:1]):   # the check pass (and its warning) once
            n = first + len(df)
        return n


def _text_frame(columns: dict, index, empty_is_missing: bool = False) -> pd.DataFrame:
    """Object columns of ``str`` with None (never NaN) where a value is missing (or ``""``, with
    ``empty_is_missing``)."""
    out = {}
    for c, a in columns.items():
        a = np.array(a, dtype=object)      # a copy
        miss = pd.isna(a)
        if empty_is_missing:
            miss |= a == ""
        a[miss] = None
        out[c] = a
    return pd.DataFrame(out, index=index, dtype=object)   # (pandas 3 would infer str, with NaN)


def iter_catalog_chunks(path, chunk_size: int, columns=None, **options):
    """``CatalogFile(path, **options).chunks(chunk_size, columns)``: ``(DataFrame, first_row)`` of a
    CSV/TSV, Parquet or Arrow file, every column as text (see :class:`CatalogFile`)."""
    return CatalogFile(path, **options).chunks(chunk_size, columns)


# ---------------------------------------------------------------------------------- images
class ImageFiles(NamedTuple):
    """What :func:`image_paths_for` found: one entry per id."""

    #: ``DIR/<id>.<ext>`` (str) of the file found, or None when there is no entry by such a name.
    paths: list
    #: True where ``paths`` is a regular file (or a symlink to one); False where the only entries
    #: named like an image are something else (a FIFO, a device, a folder, a broken symlink: to be
    #: reported, never read) or there is none.
    is_file: np.ndarray


_EXT_RANK = {e: r for r, e in enumerate(IMAGE_EXTENSIONS)}
_NOT_IN_NAME = {"/", "\0"} | {s for s in (os.sep, os.altsep) if s}
_MIXED_CASE: dict[str, tuple[tuple, dict]] = {}    # folder -> (its (dev, ino, mtime_ns), mixed-case entries)


def image_paths_for(ids, images_dir, progress: bool = True) -> ImageFiles:
    """The image file of each product id in a folder: ``<images_dir>/<id>.<ext>``.

    ``ext`` is one of :data:`IMAGE_EXTENSIONS` in any letter case (``.jpg``, ``.JPG``, ``.Jpg``);
    a regular file (or a symlink to one) of the earliest extension in that order wins (at one
    extension: lower case, then upper, then mixed). When no regular file has such a name but
    another entry does (a FIFO, a device, a folder, a broken symlink), that entry is returned with
    ``is_file`` False so that the caller reports it. This is what :func:`load_catalog` with
    ``images_dir=`` uses, and ``semcat predict --images``.

    Each id is probed (``lstat`` of ``<id>.jpg``, ``<id>.JPG``, ``<id>.jpeg``, ...: one call for a
    product with a ``.jpg``, at most eight for one without an image), never by listing the folder
    into memory, so a folder of millions of images costs nothing for a catalog that uses a few of
    them. Only mixed-case extensions cannot be probed (48 spellings); for them the folder is listed
    once, when some id is not settled by a regular ``.jpg``/``.JPG`` file, keeping just the
    mixed-case names (usually none) for as long as the folder's modification time is unchanged.
    On a case-insensitive file system the lower-case probe finds every spelling (and ids match
    file names regardless of case, as the system does).

    An empty id, or one holding a path separator or a NUL, has no image: a file name is the id plus
    ``.ext``, so nothing outside the folder is ever looked at (``..`` names the file ``...jpg``).

    Parameters
    ----------
    ids : sequence of str
        Product ids.
    images_dir : str or Path
        The folder; returned paths are ``os.path.join(str(images_dir), name)`` (resolve it first
        for absolute paths).
    progress : bool
        A ``tqdm`` bar from 50,000 ids on (a probe costs ~1-12 us on a local disk, more on a
        network file system).

    Returns
    -------
    ImageFiles
        ``paths`` (list of str or None) and ``is_file`` (bool array), aligned with ``ids``.
    """
    folder = str(images_dir)
    base = os.path.join(folder, "")
    exts = [(e, e.upper()) for e in IMAGE_EXTENSIONS]
    paths: list = [None] * len(ids)
    is_file = np.zeros(len(ids), dtype=bool)
    mixed = None
    for k, i in enumerate(tqdm(ids, desc="finding image files", unit="id", disable=not progress or len(ids) < 50_000)):
        if not isinstance(i, str):
            raise TypeError(f"image_paths_for: ids[{k}] is {type(i).__name__} ({i!r}), not str")
        if not i or any(c in i for c in _NOT_IN_NAME):
            continue
        other = None                                   # the first entry that is not a regular file
        for r, (low, up) in enumerate(exts):
            for e in (low, up):
                kind = _entry_kind(f"{base}{i}.{e}")
                if kind is True:
                    break
                if kind is False and other is None:
                    other = (r, f"{base}{i}.{e}")
            else:
                e = None
            if e is not None:
                found = (r, f"{base}{i}.{e}")
                break
        else:
            found = None
        if found is None or found[0] > 0:              # a mixed-case spelling may come first
            if mixed is None:
                mixed = _mixed_case_entries(folder)
            for r, name, reg in mixed.get(i, ()):
                if reg and (found is None or r < found[0]):
                    found = (r, base + name)
                    break
                if not reg and other is None:
                    other = (r, base + name)
        if found is not None:
            paths[k], is_file[k] = found[1], True
        elif other is not None:
            paths[k] = other[1]
    return ImageFiles(paths, is_file)


def _entry_kind(path: str):
    """True: a regular file (or a symlink to one); False: another entry; None: no entry."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    except OSError as e:
        if e.errno in (errno.ENAMETOOLONG, errno.EINVAL):   # a name no file can have (too long, ':' on Windows)
            return None
        raise
    if stat.S_ISREG(st.st_mode):
        return True
    if stat.S_ISLNK(st.st_mode):
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            return False                                # a broken symlink: reported, not read
    return False


def _mixed_case_entries(folder: str) -> dict:
    """``{stem: [(rank, name, is_file), ...]}`` of the entries whose extension is an image extension
    in mixed case (``x.Jpg``), from one listing of ``folder``, kept while its mtime is unchanged."""
    st = os.stat(folder)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    hit = _MIXED_CASE.get(folder)
    if hit is not None and hit[0] == key:
        return hit[1]
    out: dict = {}
    with os.scandir(folder) as it:
        for entry in it:
            stem, dot, ext = entry.name.rpartition(".")
            low = ext.lower()
            if not dot or low not in _EXT_RANK or ext == low or ext == ext.upper():
                continue
            out.setdefault(stem, []).append((_EXT_RANK[low], entry.name, entry.is_file()))
    for v in out.values():
        v.sort(key=lambda t: (t[0], not t[2], t[1]))
    if len(_MIXED_CASE) >= 16:
        _MIXED_CASE.clear()
    _MIXED_CASE[folder] = (key, out)
    return out


def _missing_mask(s: pd.Series) -> np.ndarray:
    """True where a value is NaN/None or a blank string."""
    na = s.isna().to_numpy(dtype=bool)
    blank = s.astype(str).str.strip().eq("").to_numpy(dtype=bool)
    return na | blank


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or (
        isinstance(v, str) and not v.strip())


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
            cf = CatalogFile(p)          # checks the file is readable (ValueError naming it)
            with cf._readable():
                df = pd.read_parquet(p) if cf.kind == "Parquet" else pd.read_feather(p)
        else:
            df = read_csv(p, what="catalog CSV", id_col=id, repair_col=title)
            repairs = [dict(r, column="title") for r in df.attrs.pop("report").to_dict("records")]
        csv_dir = p.resolve().parent
        where = f"{str(p)!r}"
    else:
        raise TypeError(f"source must be a CSV path or a pandas DataFrame (or a Parquet/Arrow file path), not "
                        f"{type(source).__name__}")
    return _map_catalog(df, where=where, csv_dir=csv_dir, repairs=repairs, images_dir=images_dir, id=id,
                        title=title, image=image, path=path, path_col=path_col, sep=sep, unlabelled=unlabelled,
                        taxonomy=taxonomy)


def _map_catalog(df: pd.DataFrame, *, where: str, csv_dir, repairs: list, images_dir, id, title, image, path,
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
    item_id = pd.Series([_id_str(v) for v in ids_raw], index=df.index, dtype=object)
    dup = item_id[item_id.duplicated(keep=False)]
    if len(dup):
        names = list(dict.fromkeys(dup))
        raise ValueError(f"{where}: {len(names)} duplicate item id(s) in column {id!r}: {names[:10]}"
                         f"{' ...' if len(names) > 10 else ''}; ids must be unique (drop or rename duplicates)")

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
    titles = np.where(no_title, "", df[title].astype(str).str.strip().to_numpy(dtype=object)).tolist()
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
                report.append(dict(item_id=iid, column="image_path", problem=f"image file {p!r}: not a regular file"))
            else:
                report.append(dict(item_id=iid, column="image_path",
                                   problem=f"no image file {iid}.<{'|'.join(IMAGE_EXTENSIONS)}> in {images_dir}"))
    elif image is not None:
        base = images_dir or csv_dir or Path.cwd()
        rows = enumerate(zip(item_id, df[image].tolist()))
        for k, (iid, v) in tqdm(rows, total=len(df), desc="checking image files", unit="img",
                                disable=len(df) < 20_000):
            if image_rows is not None and not image_rows[k]:
                continue                                  # a row the caller drops: its file is not looked at
            if _missing(v):
                report.append(dict(item_id=iid, column="image_path", problem=f"no image path in column {image!r}"))
                continue
            p = _resolve_image(str(v).strip(), base)
            try:
                check_image_file(p)   # a regular file of bounded size: never a FIFO, a device or a folder
                image_path[k] = str(p.resolve())
            except ImageError as e:
                problem = (f"image file {str(p)!r} does not exist" if e.reason == "missing file"
                           else f"image file {str(p)!r}: {e.reason}")
                report.append(dict(item_id=iid, column="image_path", problem=problem))

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
    out.attrs["report"] = _make_report(report)
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
        out = _map_catalog(df, where=where, csv_dir=csv_dir, repairs=repairs, images_dir=images_dir, id=id,
                           title=title, image=image, path=path, path_col=path_col, sep=sep, unlabelled=unlabelled,
                           taxonomy=taxonomy, row0=first, image_rows=rows)
        again = seen.add(out["item_id"].to_numpy())
        if len(again):
            names = list(dict.fromkeys(again.tolist()))
            raise ValueError(f"{where}: {len(names)} duplicate item id(s) in column {id!r}: {names[:10]}"
                             f"{' ...' if len(names) > 10 else ''}; ids must be unique (drop or rename duplicates)")
        out.index = pd.RangeIndex(first, first + len(out))
        if rows is not None:
            report = out.attrs.get("report")
            out = out[rows]
            if report is not None and len(report):
                out.attrs["report"] = _make_report(report[report["item_id"].isin(set(out["item_id"]))]
                                                   .to_dict("records"))
        yield out, first


def _resolve_image(raw: str, base: Path) -> Path:
    """An image-column value as a path: absolute as it is, else relative to ``base``.

    A relative Windows-style path (``images\\123.jpg``, from a CSV made on Windows) that does not
    exist as written is retried with ``/`` separators on systems where ``\\`` is not one.
    """
    p = Path(raw).expanduser()
    p = p if p.is_absolute() else base / p
    if "\\" in raw and os.sep != "\\" and not p.is_file():
        q = Path(raw.replace("\\", "/")).expanduser()
        q = q if q.is_absolute() else base / q
        if q.is_file():
            return q
    return p


def _id_str(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


# ---------------------------------------------------------------------------------- fashion
def load_fashion(dir, styles: str = "styles.csv", images: str = "images") -> pd.DataFrame:
    """Load the Kaggle "Fashion Product Images" layout (``styles.csv`` + ``images/<id>.jpg``).

    The label is ``masterCategory > subCategory > articleType``, the title ``productDisplayName``;
    the other columns (gender, baseColour, season, year, usage, and the three level columns) are
    kept. Malformed lines of the original Kaggle file (unquoted commas in the title) are repaired
    and listed in ``attrs["report"]`` together with missing titles and images.

    Parameters
    ----------
    dir : str or Path
        Folder holding ``styles.csv`` and ``images/``.
    styles, images : str
        File / folder names inside ``dir``.
    """
    d = Path(dir).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"fashion folder {str(d)!r} does not exist; give the folder holding "
                                f"{styles} and {images}/ (the Kaggle 'Fashion Product Images' download)")
    csv = d / styles
    if not csv.is_file():
        raise FileNotFoundError(f"{str(csv)!r} not found: the fashion folder must contain {styles} "
                                f"(found {sorted(p.name for p in d.iterdir())[:10]})")
    img = d / images
    if not img.is_dir():
        return _no_images(csv, img)
    return load_catalog(csv, images_dir=img, id="id", title="productDisplayName",
                        path=list(FASHION_PATH_COLUMNS))


def _no_images(csv: Path, img: Path) -> pd.DataFrame:
    df = load_catalog(csv, id="id", title="productDisplayName", path=list(FASHION_PATH_COLUMNS))
    rep = pd.DataFrame(df.attrs["report"])
    extra = pd.DataFrame({"item_id": df["item_id"], "column": "image_path",
                          "problem": f"images folder {str(img)!r} does not exist"})
    df.attrs["report"] = _make_report((pd.concat([rep, extra], ignore_index=True) if len(rep) else extra)
                                      .to_dict("records"))
    return df


def tutorial_dir() -> Path:
    """Folder of the bundled tutorial catalog (``styles.csv`` + ``images/``) inside the package."""
    from importlib.resources import files

    return Path(str(files("semcat_kit") / "data" / "fashion_tutorial"))


def load_fashion_tutorial() -> pd.DataFrame:
    """The bundled tutorial catalog: ~3,000 Myntra products covering all 170 category paths.

    Drawn from the full Kaggle/Myntra catalog by ``scripts/make_tutorial_subset.py`` (seeded; a
    per-leaf quota proportional to the square root of the leaf size, tiny leaves kept whole).
    Works offline after ``pip install``. Same columns as :func:`load_fashion`.
    """
    d = tutorial_dir()
    if not (d / "styles.csv").is_file():
        raise FileNotFoundError(f"the bundled tutorial catalog is missing from {d}; reinstall semcat_kit "
                                "or run scripts/make_tutorial_subset.py")
    return load_fashion(d)
