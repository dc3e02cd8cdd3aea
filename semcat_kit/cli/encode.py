"""``semcat encode``: encode a catalog into the embedding store, in one process or each ``torchrun``
rank its share (:meth:`semcat_kit.Pipeline.fill_store`; a catalog file is streamed, memory bounded by
``--chunk-size`` rows)."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from .common import CliError, check_device, check_training_catalog

__all__ = ["run"]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run(args) -> int:
    """Encode a catalog into the store; under torchrun each rank encodes rows ``rank::world``."""
    import tempfile

    from .._core import distributed
    from ..orchestrate.config import CATALOG_DEFAULTS, pipeline_config, read_train_config
    from ..orchestrate.pipeline import Pipeline

    if args.chunk_size < 1 or args.batch_size < 1:
        raise CliError("--chunk-size and --batch-size must be >= 1")
    check_device(args.device)
    distributed.init_from_env()   # one code path: a process group only when torchrun started several (idempotent)
    rank, world = distributed.rank(), distributed.world_size()
    cfg = read_train_config(args.config) if args.config else None
    base = pipeline_config(args.catalog, cfg)
    text_name = args.text_encoder if args.text_encoder is not None else base.text_encoder
    image_name = args.image_encoder if args.image_encoder is not None else base.image_encoder
    text_name = None if text_name in (None, "none", "") else text_name
    image_name = None if image_name in (None, "none", "") else image_name
    if text_name is None and image_name is None:
        raise CliError("--text-encoder and --image-encoder are both none; give at least one")
    sample = args.sample if args.sample is not None else base.sample
    if sample is not None and sample < 1:
        raise CliError(f"--sample must be >= 1, not {sample}")
    mapping = cfg["catalog"] if cfg else CATALOG_DEFAULTS
    check_training_catalog(args.catalog, mapping, args.config or "--config")
    from ..encode.store import writable_problem

    problem = writable_problem(args.cache_dir)     # the store is what this command writes: refuse up front
    if problem:
        raise CliError(f"--cache-dir {args.cache_dir} cannot be written ({problem}); nothing was encoded. Give a "
                       "folder you can write to")
    pipe = Pipeline(base, cache_dir=args.cache_dir, text_encoder=text_name, image_encoder=image_name, sample=sample,
                    device=distributed.device_for_rank(args.device))
    opts = dict(batch_size=args.batch_size, num_workers=args.num_workers, chunk_size=args.chunk_size,
                store_dtype=args.store_dtype)
    with contextlib.ExitStack() as stack:
        rows = None
        if pipe.catalog_file is not None and args.out and rank == 0:
            # the selected rows' item_id/title/image_path, for --out below
            cache = Path(args.cache_dir).expanduser()
            try:                            # beside the store (the system temp folder may be small)
                cache.mkdir(parents=True, exist_ok=True)
            except OSError:
                cache = None
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=".semcat-encode-", dir=cache))
            rows = Path(tmp) / "catalog.parquet"
        fill = pipe.fill_store(rank, world, rows_out=rows, progress=not args.quiet and rank == 0, log=_stderr, **opts)
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
            for m, store in pipe.merge_stores(args.store_dtype).items():   # rank 0 adopts every rank's shards
                print(f"store {store.root}: {len(store)} {m} vectors in {len(store.shard_files)} shard(s)")
            if args.out:   # from the store (nothing left to encode); a file catalog is read back column by column
                full = pipe.write_embeddings(args.out, rows=rows, progress=not args.quiet, **opts)
                print(f"wrote embeddings of {len(full)} products to {args.out} "
                      f"({len(full.failures)} unusable input(s))")
                for _, r in full.failures.head(10).iterrows():
                    print(f"  {r['item_id']}: {r['modality']}: {r['reason']}", file=sys.stderr)
        distributed.barrier()
    return 0
