"""A seeded random sample of a catalog's products: the rows of a loaded catalog, or their positions
computed from the row count alone (so a file can be sampled while it is streamed)."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["sample_positions", "sample_catalog"]


def sample_positions(n_rows: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of the ``n`` rows :func:`sample_catalog` keeps out of ``n_rows`` (all of them
    when ``n >= n_rows``): pandas' own draw, ``RandomState(seed).choice(n_rows, n, replace=False)``."""
    if n >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    return np.sort(np.random.RandomState(seed).choice(n_rows, size=n, replace=False)).astype(np.int64)


def sample_catalog(catalog: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A random sample of ``n`` products (all when ``n >= len``), in catalog order; the catalog's
    problem report (``attrs["report"]``) keeps the sampled products' rows."""
    if n >= len(catalog):
        return catalog.reset_index(drop=True)
    report = catalog.attrs.get("report")
    out = catalog.sample(n=n, random_state=seed).sort_index().reset_index(drop=True)
    if report is not None:
        out.attrs["report"] = report[report["item_id"].isin(set(out["item_id"]))].reset_index(drop=True)
    return out
