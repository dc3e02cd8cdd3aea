"""Catalog files read in chunks of rows, every column as text: :class:`CatalogFile`, the package's
one chunked reader (CSV/TSV, Parquet, Arrow IPC / Feather).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from .csv_files import check_csv, csv_delimiter, csv_field_limit, csv_header, stream_csv
from .report import make_report

__all__ = ["CatalogFile", "text_frame", "CSV_SUFFIXES", "PARQUET_SUFFIXES", "ARROW_SUFFIXES"]

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
            with csv_field_limit():
                header, _ = csv_header(self.path, what, csv_delimiter(dict(self.csv_options)))
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
                with csv_field_limit():
                    self._csv_plan = check_csv(self.path, what=self.what, id_col=self.id_col,
                                                title_col=self.repair_col,
                                                delim=csv_delimiter(dict(self.csv_options)))
            for df, first in stream_csv(self.path, int(chunk_size), *self._csv_plan, what=self.what,
                                         id_col=self.id_col, repair_col=self.repair_col, usecols=cols,
                                         kw=self.csv_options):
                report = df.attrs.get("report")
                df = text_frame({c: df[c].to_numpy(dtype=object) for c in cols}, df.index)
                if arrow:
                    import pyarrow as pa

                    yield pa.table({c: pa.array(df[c].tolist(), pa.string()) for c in cols}), first
                else:
                    df.attrs["report"] = report if report is not None else make_report([])
                    yield df, first
            return
        seen = False
        for t in self._arrow_chunks(int(chunk_size), cols):
            seen = True
            if arrow:
                yield t, first
            else:
                df = text_frame({c: t.column(c).to_numpy(zero_copy_only=False) for c in cols},
                                 pd.RangeIndex(first, first + t.num_rows))
                df.attrs["report"] = make_report([])
                yield df, first
            first += t.num_rows
        if not seen:
            if arrow:
                import pyarrow as pa

                yield pa.table({c: pa.array([], pa.string()) for c in cols}), 0
            else:
                df = pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
                df.attrs["report"] = make_report([])
                yield df, 0

    def read_frame(self) -> pd.DataFrame:
        """The whole Parquet / Arrow file as pandas reads it (its own column types, not text); a file
        that cannot be read is a ``ValueError`` naming it. CSV: use :func:`~semcat_kit.datasets.csv_files.read_csv`."""
        if self.kind == "CSV":
            raise ValueError(f"{self.what} {str(self.path)!r} is a CSV file: read it with read_csv")
        with self._readable():
            return pd.read_parquet(self.path) if self.kind == "Parquet" else pd.read_feather(self.path)

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


def text_frame(columns: dict, index, empty_is_missing: bool = False) -> pd.DataFrame:
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
