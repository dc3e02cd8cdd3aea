"""Reading CSV files the one way this package reads them: BOM, encoding, long fields, duplicate
header names, malformed lines repaired into a free-text column and reported.

:func:`read_csv` reads a whole file, :func:`read_csv_chunks` a bounded number of rows at a time
(a check pass, :func:`check_csv`, then :func:`stream_csv`).
"""
from __future__ import annotations

import contextlib
import csv
import io
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .._core.memory import release_freed_memory
from .report import make_report

__all__ = ["read_csv", "read_csv_chunks", "check_csv", "stream_csv", "csv_header", "csv_delimiter",
           "csv_field_limit", "scan_records"]

#: makes a long description field a crash)
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


@contextlib.contextmanager
def csv_field_limit():
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
    with csv_field_limit():
        df, repairs = _read_csv(path, id_col=id_col, title_col=repair_col, what=what, kw=pandas_kw)
    df.attrs["report"] = make_report(repairs)
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
    delim = csv_delimiter(kw)
    with csv_field_limit():
        names, repair = check_csv(path, what=what, id_col=id_col, title_col=repair_col, delim=delim)
    yield from stream_csv(path, chunksize, names, repair, what=what, id_col=id_col, repair_col=repair_col,
                           usecols=usecols, kw=kw)


def stream_csv(path: Path, chunksize: int, names: list, repair: bool, *, what, id_col, repair_col, usecols, kw):
    """:func:`read_csv_chunks` after its check pass (``names, repair`` from :func:`check_csv`)."""
    kw = dict(kw)
    delim = csv_delimiter(kw)
    pos = None
    if usecols is not None:
        missing = [c for c in usecols if c not in names]
        if missing:
            raise ValueError(f"{what} {str(path)!r} has no column(s) {missing}; its columns are {names}")
        pos = sorted(names.index(c) for c in usecols)
        kw["usecols"] = pos
    cols = names if pos is None else [names[i] for i in pos]
    first = 0
    with csv_field_limit():
        if not repair:
            try:
                reader = pd.read_csv(path, engine="c", on_bad_lines="error", encoding="utf-8-sig",
                                     chunksize=chunksize, **kw)
                for df in reader:
                    df.columns = cols
                    df.attrs["report"] = make_report([])
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


def csv_delimiter(kw: dict) -> str:
    d = kw.get("sep", kw.get("delimiter"))
    if d is None:
        kw["sep"] = d = ","
    if not isinstance(d, str) or len(d) != 1:
        raise ValueError(f"read_csv_chunks reads one-character separators, not {d!r}")
    return d


def csv_header(path: Path, what: str, delim: str = ","):
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


def _dialect(kw: dict) -> dict:
    """The csv-module options matching pandas' quoting options in ``kw``."""
    out = {}
    for k in ("quotechar", "doublequote", "escapechar", "quoting"):
        if kw.get(k) is not None:
            out[k] = kw[k]
    return out


def scan_records(path: Path, what: str, n: int, delim: str = ",", kw: dict | None = None,
                 id_col: str | None = None, header: list | None = None) -> np.ndarray:
    """Field count of every data record (blank lines skipped), in one strict csv-module pass.

    Raises a ``ValueError`` naming the file and the lines

    * when a quoted value is not closed properly: its closing quote is followed by other text
      (``"a,b\n2,c,"d",e``) or it runs to the end of the file. A missing quote otherwise makes the
      following lines one value and their products vanish silently;
    * when a record has fewer fields than the ``n`` header columns: pandas would pad it, shifting
      a value into the wrong column (an image path read as the title).

    Records with more fields are only counted (:func:`read_csv` repairs them or refuses them).
    """
    dialect = _dialect(kw or {})

    def records(f):
        r = csv.reader(f, delimiter=delim, strict=True, **dialect)
        next(r, None)
        return r

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lens = np.fromiter(map(len, records(f)), dtype=np.int64)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e, what) from e
    except csv.Error:
        _raise_quote_error(path, what, delim, dialect)
        raise
    if (lens[lens > 0] < n).any():
        _raise_short(path, what, n, delim, dialect, id_col, header)
    return lens[lens > 0]


def _raise_quote_error(path: Path, what: str, delim: str, dialect: dict) -> None:
    """Find the record whose quoting is broken (a second, slower pass) and raise naming its lines."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        r = csv.reader(f, delimiter=delim, strict=True, **dialect)
        start = 1
        while True:
            start = r.line_num + 1
            try:
                if next(r, None) is None:
                    return
            except csv.Error as e:
                end = r.line_num
                with open(path, encoding="utf-8-sig", newline="") as g:
                    line = next((x for k, x in enumerate(g, 1) if k == start), "").rstrip("\r\n")
                if "unexpected end of data" in str(e):
                    detail = (f"the quoted value that starts on line {start} is never closed, so every line after it "
                              f"(lines {start}-{end}) would be read as one value")
                else:
                    detail = (f"the quoted value that starts on line {start} is not closed properly ({e} on line "
                              f"{end}), so lines {start}-{end} would be read as one value")
                raise ValueError(f"{what} {str(path)!r}: {detail} and the products on them lost. Line {start}: "
                                 f"{line[:120]!r}. Close the quote (a quote inside a value is written twice: \"\")"
                                 ) from None


def _raise_short(path: Path, what: str, n: int, delim: str, dialect: dict, id_col, header) -> None:
    """Raise naming the first records with fewer than ``n`` fields (a second, slower pass)."""
    ii = header.index(id_col) if header and id_col in header else 0 if header else None
    shown, count = [], 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        r = csv.reader(f, delimiter=delim, strict=True, **dialect)
        next(r, None)
        start = r.line_num + 1
        for fields in r:
            if fields and len(fields) < n:
                count += 1
                if len(shown) < 3:
                    item = f" ({header[ii]} {fields[ii]!r})" if ii is not None and ii < len(fields) else ""
                    shown.append(f"line {start}{item}: {len(fields)} field(s) {delim.join(fields)[:80]!r}")
            start = r.line_num + 1
    raise ValueError(f"{what} {str(path)!r}: {count} line(s) have fewer fields than the {n} header columns, so "
                     f"their values cannot be placed (the first missing field would shift the rest into the "
                     f"wrong columns): {'; '.join(shown)}. Write every field, an empty value as nothing between "
                     "two separators, or fix the quoting.")


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
            self.ids.append(str(item))
        if self.keep:
            self.repairs.append(dict(item_id=str(item), column=self.title_col,
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


def check_csv(path: Path, *, what: str, id_col, title_col, delim: str):
    """One pass over a CSV: ``(column names, needs repair)``; raises what :func:`read_csv` raises
    (and warns once about the lines it will repair) before anything is read into memory."""
    header, _ = csv_header(path, what, delim)
    names = [h if h else f"Unnamed: {k}" for k, h in enumerate(header)]   # pandas' names for blank headers
    lens = scan_records(path, what, len(header), delim, id_col=id_col, header=header)
    # pandas would turn a first line with too many fields into an index: repaired like the others
    repair = bool((lens > len(header)).any())
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
    header, _ = csv_header(path, what, delim)
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
        df.attrs["report"] = make_report(fixer.repairs)
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
    delim = csv_delimiter(kw)
    header, first = csv_header(path, what, delim)
    fixer = _LineFixer(header, id_col, title_col, delim)
    n = fixer.n
    kw = dict(kw)
    if id_col is not None and "dtype" not in kw:
        kw["dtype"] = {id_col: str}
    try:
        # a first data line with too many fields makes pandas take the first column(s) as the index
        # (shifting every column) instead of failing: repair it like any other bad line
        # one strict pass first: broken quoting and short lines are refused, long lines counted
        lens = scan_records(path, what, n, delim, kw, id_col=id_col, header=header)
        malformed = len(first) > n or bool((lens > n).any())
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
