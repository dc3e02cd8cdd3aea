"""One process's share of a catalog file, streamed: the rows ``j % world == rank`` of the (sampled)
catalog, chunk by chunk, mapped as :meth:`Pipeline.load_catalog <semcat_kit.Pipeline.load_catalog>`
maps the whole file. :meth:`semcat_kit.Pipeline.catalog_share` uses it for a catalog file (memory
bounded by the chunk, not by the catalog)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..datasets import CatalogFile, load_catalog_chunks, sample_positions
from .config import catalog_kwargs

__all__ = ["catalog_file_share", "SHARE_COLUMNS"]

#: the columns of a share (what encoding reads)
SHARE_COLUMNS = ["item_id", "title", "image_path"]


def catalog_file_share(path, options: dict, *, sample: int | None = None, seed: int = 0, rank: int = 0,
                       world: int = 1, chunk_size: int = 8192, rows_out=None, images: bool = False,
                       log: Callable[[str], None] | None = None):
    """This rank's share of a catalog file, chunk by chunk.

    Each chunk gets the pipeline's column mapping (:func:`semcat_kit.datasets.load_catalog_chunks`:
    ids, titles, image paths relative to the file, the checks and the report); the selected rows
    (all, or the ``sample`` positions of :func:`semcat_kit.datasets.sample_positions`) are numbered
    ``j = 0, 1, ...`` and this rank keeps ``j % world == rank`` -- the rows
    ``Pipeline(...).load_catalog().iloc[rank::world]`` of the whole catalog. Every rank checks every
    row's id and category (the same errors everywhere) but looks at the image files of its own rows
    only.

    Parameters
    ----------
    path : path
        The catalog file (CSV, TSV, Parquet, Arrow).
    options : dict
        ``catalog_options`` (the column mapping); a relative ``images_dir`` is relative to the file.
    rows_out : path, optional
        A Parquet file that receives every selected row's ``item_id, title, image_path`` (the whole
        catalog, in order: what rank 0 encodes into an embeddings folder afterwards).
    images : bool
        Report unusable image paths (only when an image encoder reads them).
    log : callable, optional
        Receives one line per repaired CSV line of this rank's rows and per unusable image path
        (10 of them, then a count).

    Returns
    -------
    (frames, total)
        A generator of ``SHARE_COLUMNS`` frames and this rank's number of rows (None when it is
        only known after a pass over a CSV).
    """
    path = Path(path)
    log = log or (lambda line: None)
    kw = catalog_kwargs(dict(options), path.resolve().parent)
    # one reader for the count and the chunks (a CSV is checked once)
    cf = CatalogFile(path, what="catalog CSV" if path.suffix.lower() == ".csv" else "catalog file",
                     id_col=kw.get("id", "id"), repair_col=kw.get("title", "title"))
    positions, n_sel = None, None
    if sample is not None:
        positions = sample_positions(cf.num_rows(), sample, seed)
        n_sel = len(positions)
    elif cf.kind != "CSV":
        n_sel = cf.num_rows()           # from the metadata: no pass over the rows
    total = None if n_sel is None else n_sel // world + (rank < n_sel % world)

    def select(first: int, n: int):
        """``(selected, j)``: which rows of the chunk are in the (sampled) catalog, and their number j."""
        g = np.arange(first, first + n, dtype=np.int64)
        if positions is None:
            return np.ones(n, dtype=bool), g
        j = np.searchsorted(positions, g)
        return (j < len(positions)) & (positions[np.minimum(j, len(positions) - 1)] == g), j

    def keep(first: int, n: int):          # with rows_out every selected row is kept (for the file)
        sel, j = select(first, n)
        return sel if rows_out is not None else sel & (j % world == rank)

    def frames():
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(c, pa.string()) for c in SHARE_COLUMNS])
        writer = pq.ParquetWriter(str(rows_out), schema) if rows_out is not None else None
        n_images = 0
        try:
            for cat, first in load_catalog_chunks(cf, chunk_size=chunk_size, keep=keep, **kw):
                rep = cat.attrs["report"]            # each rank lists the repaired lines of its rows ...
                for r in rep[rep["problem"].str.startswith("malformed CSV line")].itertuples():
                    log(f"  {r.item_id}: {r.problem}")
                if images:                           # ... and why an image path is unusable (10 of them)
                    for r in rep[rep["column"] == "image_path"].itertuples():
                        n_images += 1
                        if n_images <= 10:
                            log(f"  {r.item_id}: {r.problem}")
                sel = cat[SHARE_COLUMNS]           # kept rows, indexed by their position in the file
                sel.attrs = {}
                if writer is not None and len(sel):
                    writer.write_table(pa.Table.from_pandas(sel.astype(object), schema=schema, preserve_index=False))
                if writer is not None:             # this rank's share of the selected rows
                    g = sel.index.to_numpy(dtype=np.int64)
                    j = g if positions is None else np.searchsorted(positions, g)
                    sel = sel[j % world == rank]
                yield sel
            if n_images > 10:
                log(f"  ... and {n_images - 10} more unusable image path(s)")
        finally:
            if writer is not None:
                writer.close()
    return frames(), total
