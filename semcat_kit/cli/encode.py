"""``semcat encode``: encode a catalog into the embedding store, in one process or each ``torchrun``
rank its share; a catalog file is streamed (memory bounded by ``--chunk-size`` rows)."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

from .common import CliError, check_device, check_training_catalog, load_training_catalog, sample_catalog

__all__ = ["run", "sample_positions", "stream_catalog_file", "ENCODE_COLUMNS"]


def sample_positions(n_rows: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted row positions of the products :func:`sample_catalog` keeps (``catalog.sample(n=n,
    random_state=seed)``, pandas' own draw: ``RandomState(seed).choice(n_rows, n, replace=False)``),
    computed from the row count alone so a file can be sampled while it is streamed."""
    if n >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    return np.sort(np.random.RandomState(seed).choice(n_rows, size=n, replace=False)).astype(np.int64)


ENCODE_COLUMNS = ["item_id", "title", "image_path"]


def stream_catalog_file(args, path: Path, mapping: dict, sample, seed: int, rank: int, world: int, out_rows=None,
                         image_used: bool = False):
    """This rank's share of a catalog file, chunk by chunk, mapped as ``semcat train`` maps it.

    Each chunk gets the Pipeline's column mapping (:func:`semcat_kit.datasets.mapping.load_catalog_chunks`:
    ids, titles, image paths relative to the file, the checks and the report); the selected rows
    (all, or the ``--sample`` positions of :func:`sample_positions`) are numbered ``j = 0, 1, ...`` and
    this rank keeps ``j % world == rank`` -- the rows ``sample_catalog(catalog).iloc[rank::world]``
    gave when the whole catalog was loaded. Every rank checks every row's id and category (the same
    errors everywhere) but looks at the image files of its own rows only. ``out_rows``: a Parquet file
    that receives every selected row (rank 0 with ``--out``). Returns ``(frames, total)``.
    """
    from ..datasets import CatalogFile, load_catalog_chunks
    from ..orchestrate.config import catalog_kwargs

    kw = catalog_kwargs(dict(mapping), path.resolve().parent)
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

    def keep(first: int, n: int):          # rank 0 with --out keeps every selected row (for the file)
        sel, j = select(first, n)
        return sel if out_rows is not None else sel & (j % world == rank)

    def frames():
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(c, pa.string()) for c in ENCODE_COLUMNS])
        writer = pq.ParquetWriter(str(out_rows), schema) if out_rows is not None else None
        images = 0
        try:
            for cat, first in load_catalog_chunks(cf, chunk_size=args.chunk_size, keep=keep, **kw):
                rep = cat.attrs["report"]            # each rank lists the repaired lines of its rows ...
                for r in rep[rep["problem"].str.startswith("malformed CSV line")].itertuples():
                    print(f"  {r.item_id}: {r.problem}", file=sys.stderr)
                if image_used:                       # ... and why an image path is unusable (10 of them)
                    for r in rep[rep["column"] == "image_path"].itertuples():
                        images += 1
                        if images <= 10:
                            print(f"  {r.item_id}: {r.problem}", file=sys.stderr)
                sel = cat[ENCODE_COLUMNS]         # kept rows, indexed by their position in the file
                sel.attrs = {}
                if writer is not None and len(sel):
                    writer.write_table(pa.Table.from_pandas(sel.astype(object), schema=schema, preserve_index=False))
                if writer is not None:             # this rank's share of the selected rows
                    g = sel.index.to_numpy(dtype=np.int64)
                    j = g if positions is None else np.searchsorted(positions, g)
                    sel = sel[j % world == rank]
                yield sel
            if images > 10:
                print(f"  ... and {images - 10} more unusable image path(s)", file=sys.stderr)
        finally:
            if writer is not None:
                writer.close()
    return frames(), total


def same_catalog_on_every_rank(args, mapping: dict, sample, seed: int, file_source: bool) -> None:
    """Refuse (on every rank alike, before encoding) ranks that would read different catalogs: other
    rows, another order, another sample or mapping. A catalog file is compared by size and SHA-256."""
    import json

    from .._core import distributed
    from .._core.digest import file_sha256

    ident = {"sample": sample, "seed": seed, "mapping": json.dumps(mapping, sort_keys=True, default=str)}
    if file_source:
        path = Path(args.catalog).expanduser()
        ident.update(bytes=path.stat().st_size, sha256=file_sha256(path))
    else:
        ident["source"] = str(args.catalog)
    per = distributed.all_gather_object(ident)
    diff = {r: sorted(k for k in ident if p.get(k) != per[0].get(k)) for r, p in enumerate(per)}
    diff = {r: d for r, d in diff.items() if d}
    if diff:
        shown = "; ".join(f"rank {r}: {', '.join(k if k != 'sha256' else 'content' for k in d)}" for r, d in diff.items())
        raise CliError(f"the ranks would read different catalogs for --catalog {args.catalog} (differing from rank 0: "
                       f"{shown}); every rank must read the same catalog file (same rows in the same order) with "
                       "the same --config and --sample. Nothing was encoded", all_ranks=True)


def run(args) -> int:
    """Encode a catalog into the store; under torchrun each rank encodes rows ``rank::world``.

    A catalog file is streamed (memory bounded by ``--chunk-size`` rows, see
    :func:`stream_catalog_file`); ``tutorial`` and a Kaggle fashion folder (small) are loaded whole.
    """
    import tempfile

    from ..orchestrate.config import CATALOG_DEFAULTS, read_train_config

    import semcat_kit as sk

    from ..encode.encode import encode_into_store
    from ..encode.store import VectorStore

    if args.chunk_size < 1 or args.batch_size < 1:
        raise CliError("--chunk-size and --batch-size must be >= 1")
    check_device(args.device)
    from .._core import distributed

    distributed.init_from_env()   # one code path: a process group only when torchrun started several (idempotent)
    rank, world = distributed.rank(), distributed.world_size()
    cfg = read_train_config(args.config) if args.config else None
    mapping = cfg["catalog"] if cfg else dict(CATALOG_DEFAULTS)
    text_name = args.text_encoder if args.text_encoder is not None else (cfg["text_encoder"] if cfg else "minilm")
    image_name = args.image_encoder if args.image_encoder is not None else \
        (cfg["image_encoder"] if cfg else "efficientnet-lite0")
    text_name = None if text_name in (None, "none", "") else text_name
    image_name = None if image_name in (None, "none", "") else image_name
    if text_name is None and image_name is None:
        raise CliError("--text-encoder and --image-encoder are both none; give at least one")
    sample = args.sample if args.sample is not None else (cfg["sample"] if cfg else None)
    if sample is not None and sample < 1:
        raise CliError(f"--sample must be >= 1, not {sample}")
    seed = cfg["seed"] if cfg else 0
    device = distributed.device_for_rank(args.device)
    check_training_catalog(args.catalog, mapping, args.config or "--config")
    file_source = args.catalog != "tutorial" and Path(args.catalog).expanduser().is_file()
    from ..encode.store import writable_problem

    problem = writable_problem(args.cache_dir)     # the store is what this command writes: refuse up front
    if problem:
        raise CliError(f"--cache-dir {args.cache_dir} cannot be written ({problem}); nothing was encoded. Give a "
                       "folder you can write to")
    if world > 1:       # every rank must read the same catalog, or each encodes its share of another one
        same_catalog_on_every_rank(args, mapping, sample, seed, file_source)
    text_enc = sk.encoders.load(text_name, device=device) if text_name else None
    image_enc = sk.encoders.load(image_name, device=device) if image_name else None
    opts = dict(text_encoder=text_enc, image_encoder=image_enc, cache_dir=args.cache_dir, batch_size=args.batch_size,
                num_workers=args.num_workers, chunk_size=args.chunk_size, store_dtype=args.store_dtype)
    with contextlib.ExitStack() as stack:
        out_rows = None
        if file_source:
            if args.out and rank == 0:      # the selected rows' item_id/title/image_path, for --out below
                base = Path(args.cache_dir).expanduser()
                try:                        # beside the store (the system temp folder may be small)
                    base.mkdir(parents=True, exist_ok=True)
                except OSError:
                    base = None
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=".semcat-encode-", dir=base))
                out_rows = Path(tmp) / "catalog.parquet"
            frames, total = stream_catalog_file(args, Path(args.catalog).expanduser(), mapping, sample, seed,
                                                 rank, world, out_rows, image_used=image_enc is not None)
            fill = encode_into_store(frames, total=total, progress=not args.quiet and rank == 0,
                                     store_writer=f"r{rank}", check_ids=False, **opts)   # checked by the reader
            catalog = out_rows
        else:                               # tutorial / Kaggle folder: small, loaded whole
            catalog = load_training_catalog(args.catalog, mapping, args.config or "--config")
            if sample is not None:
                catalog = sample_catalog(catalog, sample, seed)
            fill = encode_into_store(catalog.iloc[rank::world], progress=not args.quiet and rank == 0,
                                     store_writer=f"r{rank}", **opts)
        st = fill.stats
        print(f"rank {rank}/{world}: {fill.n} products, encoded text {st.get('text_encoded', '-')}, "
              f"image {st.get('image_encoded', '-')} (the rest from the store), {len(fill.failures)} unusable "
              "input(s)", flush=True)
        if not args.out:                    # (with --out they are listed below, in catalog order)
            for _, r in fill.failures.head(10).iterrows():
                print(f"  {r['item_id']}: {r['modality']}: {r['reason']}", file=sys.stderr)
        # a store that could not be written is a failed command (exit 1) on every rank, said once
        errors = distributed.all_gather_object(st.get("cache_write_error")) if world > 1 else \
            [st.get("cache_write_error")]
        bad = [(r, e) for r, e in enumerate(errors) if e]
        if bad:
            r, e = bad[0]
            raise CliError(f"the embedding store under --cache-dir {args.cache_dir} could not be written"
                           f"{f' by rank {r}' if world > 1 else ''} ({e}): the vectors computed since were not "
                           "kept. Free space or give another --cache-dir, then run again (what was written is "
                           "reused)", all_ranks=True)
        distributed.barrier()
        if rank == 0:
            for m, enc in (("text", text_enc), ("image", image_enc)):
                if enc is None:
                    continue
                store = VectorStore.for_encoder(args.cache_dir, enc.fingerprint, m,
                                                enc.text_dim if m == "text" else enc.image_dim,
                                                dtype=args.store_dtype, writer="r0")
                store.merge()  # rank 0 finalises: adopt/verify every rank's shards, merge full tiers
                print(f"store {store.root}: {len(store)} {m} vectors in {len(store.shard_files)} shard(s)")
            if args.out:   # from the store (nothing left to encode); a file catalog is read back column by column
                full = sk.encode_catalog(catalog, text_encoder=text_enc, image_encoder=image_enc,
                                         cache_dir=args.cache_dir, batch_size=args.batch_size,
                                         num_workers=args.num_workers, progress=not args.quiet,
                                         chunk_size=args.chunk_size, out=args.out, store_dtype=args.store_dtype,
                                         store_writer="r0")
                print(f"wrote embeddings of {len(full)} products to {args.out} "
                      f"({len(full.failures)} unusable input(s))")
                for _, r in full.failures.head(10).iterrows():
                    print(f"  {r['item_id']}: {r['modality']}: {r['reason']}", file=sys.stderr)
        distributed.barrier()
    return 0
