"""Tables as a person reads them in a notebook or a widget: every cell whole (no path cut to "..."),
long paths wrapped at their ``>`` separators, headers in words placed over their values (numbers
right-aligned under a right-aligned header), cells padded apart.

Styles are inline, so the table looks the same in a JupyterLab output, inside an ipywidgets ``HTML``
(where JupyterLab's own table styles do not reach) and in an HTML report.
"""
from __future__ import annotations

import html
import numbers
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = ["Table", "show_table", "html_table"]

TABLE_STYLE = "border-collapse:collapse;margin:4px 0;font-size:12px;table-layout:auto;width:auto;max-width:100%"
# text wraps between words and at path separators, a word longer than its column (an id) breaks
# anywhere; headers wrap between words only; numbers never wrap
CELL_STYLE = "padding:3px 10px;vertical-align:top;max-width:none"
TEXT_STYLE = CELL_STYLE + ";white-space:normal;overflow-wrap:break-word"
NUMBER_STYLE = CELL_STYLE + ";white-space:nowrap"
HEAD_STYLE = CELL_STYLE + ";white-space:normal;overflow-wrap:normal;border-bottom:1px solid #999;font-weight:600;" \
                          "vertical-align:bottom"
ROW_STYLE = "border-bottom:1px solid #e4e4e4"


def _is_number(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _cell(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return f"{float(v):.{digits}f}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "; ".join(_cell(x, digits) for x in v)
    # break long paths at their separators first (overflow-wrap breaks anything else, e.g. long ids)
    return html.escape(str(v)).replace(" &gt; ", " &gt;<wbr> ")


def header_text(col) -> str:
    """A column name in words: ``share_of_true`` -> ``share of true``."""
    return str(col).replace("_", " ").strip()


def html_table(df: pd.DataFrame, headers: Mapping[str, str] | None = None, digits: int = 3,
               max_rows: int | None = None, css_class: str = "semcat-table") -> str:
    """``df`` as an HTML table (see the module docstring); ``headers`` renames columns for display.

    Booleans read ``yes`` / ``no``, floats have ``digits`` decimals, missing values are blank; at
    most ``max_rows`` rows (a last line says how many more there are). The index is not shown.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"html_table takes a pandas DataFrame, not {type(df).__name__}")
    headers = dict(headers or {})
    shown = df if max_rows is None or len(df) <= int(max_rows) else df.head(int(max_rows))
    align = ["right" if _is_number(df[c]) else "left" for c in df.columns]
    body = [NUMBER_STYLE if a == "right" else TEXT_STYLE for a in align]
    head = "".join(f"<th style='{HEAD_STYLE};text-align:{a}'>{html.escape(headers.get(c, header_text(c)))}</th>"
                   for c, a in zip(df.columns, align))
    rows = []
    for rec in shown.itertuples(index=False, name=None):
        cells = "".join(f"<td style='{st};text-align:{a}'>{_cell(v, digits)}</td>" for v, st, a in zip(rec, body, align))
        rows.append(f"<tr style='{ROW_STYLE}'>{cells}</tr>")
    more = ""
    if len(shown) < len(df):
        more = (f"<tr><td colspan='{len(df.columns)}' style='{TEXT_STYLE};color:#777'>… {len(df) - len(shown)} more "
                "rows</td></tr>")
    classes = " ".join(dict.fromkeys(["semcat-table", *str(css_class).split()]))
    return (f"<table class='{html.escape(classes)}' style='{TABLE_STYLE}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}{more}</tbody></table>")


class Table:
    """A DataFrame shown whole in a notebook (:func:`html_table`); ``frame`` is the DataFrame."""

    def __init__(self, df: pd.DataFrame, headers: Mapping[str, str] | None = None, digits: int = 3,
                 max_rows: int | None = 50):
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"show_table takes a pandas DataFrame, not {type(df).__name__}")
        self.frame, self.headers, self.digits, self.max_rows = df, dict(headers or {}), int(digits), max_rows

    def _repr_html_(self) -> str:
        return html_table(self.frame, self.headers, self.digits, self.max_rows)

    def __repr__(self) -> str:
        with pd.option_context("display.max_colwidth", None, "display.width", 200):
            return self.frame.rename(columns=lambda c: self.headers.get(c, header_text(c))).to_string(index=False)


def show_table(df: pd.DataFrame, headers: Mapping[str, str] | None = None, digits: int = 3,
               max_rows: int | None = 50) -> Table:
    """Make ``df`` the last expression of a cell with every cell shown whole: ``sk.see.show_table(df)``."""
    return Table(df, headers, digits, max_rows)
