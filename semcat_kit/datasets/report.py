"""The problem report of a catalog: the rows that were kept but need attention.

May import: nothing from semcat_kit.
"""
from __future__ import annotations

import pandas as pd

__all__ = ["ProblemReport", "REPORT_COLUMNS", "make_report"]

REPORT_COLUMNS = ["item_id", "column", "problem"]


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


def make_report(rows: list[dict]) -> ProblemReport:
    """A :class:`ProblemReport` of ``rows`` (dicts ``item_id, column, problem``)."""
    rep = ProblemReport(pd.DataFrame(rows, columns=REPORT_COLUMNS))
    rep["item_id"] = rep["item_id"].astype(object)
    return rep
