"""``semcat predict``: categorize the products of a CSV / Parquet file with an exported head, read,
scored and written ``--chunk-size`` rows at a time."""
from __future__ import annotations

import sys
from pathlib import Path


from .._core.chunks import DEFAULT_CHUNK_SIZE
from .common import CliError, check_device

__all__ = ["run", "product_chunks", "DEFAULT_CHUNK_SIZE", "OPTIONS"]

#: how the messages of the product reader name this command's column options
OPTIONS = {"id": "--id-col", "title": "--title-col", "image": "--image-col", "images_dir": "--images"}


def product_chunks(args, chunk_size: int):
    """The products of ``--input``, ``chunk_size`` rows at a time (:func:`semcat_kit.datasets.read_products`
    with the command's column options)."""
    from ..datasets.products import read_products

    return read_products(args.input, id=args.id_col, title=args.title_col, image=args.image_col,
                         images_dir=args.images, chunk_size=chunk_size, what="--input", say=OPTIONS)


def _chain(first, rest):
    yield first
    yield from rest


def run(args) -> int:
    import warnings

    from ..judge.decoding import CrmFlagWarning
    from ..ship.predictor import MissingImagesWarning, Predictor, failure_text, without_images_cost, write_predictions

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

    trust = pred.crm_trust() if args.crm else None
    if trust is not None and not trust.ok:
        print(f"--crm is flagged for this head: {trust.reason}", file=sys.stderr)
    text_only = bool(getattr(args, "text_only", False))
    if "image" in pred.head.uses:
        if text_only:
            print(f"--text-only: {without_images_cost(pred.head)}", flush=True)
        elif "image_path" not in first.columns:
            raise CliError(f"--input {args.input} has no image column ('image' / 'image_path', or --image-col NAME) "
                           f"and no --images DIR, but {without_images_cost(pred.head)}. Give the images (--image-col "
                           "or --images), or pass --text-only to predict from the titles alone")

    def products():
        for c in _chain(first, chunks):
            # --text-only: the titles alone, even where the input has images
            yield c.drop(columns=["image_path"], errors="ignore") if text_only else c
    try:
        frames = pred.predict_iter(products(), top_k=args.top_k, crm=args.crm, cache_dir=args.cache_dir,
                                   progress=not args.quiet, chunk_size=args.chunk_size, precision=precision)
    except ValueError as e:     # no calibrated thresholds, or none for this precision
        raise CliError(f"--precision {precision:g}: {e}") from None
    try:
        with warnings.catch_warnings():     # no images: refused above unless --text-only asked for it
            warnings.simplefilter("ignore", MissingImagesWarning)
            warnings.simplefilter("ignore", CrmFlagWarning)       # said above, once
            n = write_predictions(frames, out)
    except OSError as e:         # a full or read-only disk under --output: one line naming it
        detail = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        raise CliError(f"--output {args.output}: the predictions could not be written ({detail}); nothing was "
                       "written there (no half-written file). Free space or give another --output") from None
    fails = pred.failures
    print(f"wrote {n} predictions to {out} ({len(fails)} unusable input(s))")
    if precision is not None:
        t = pred.hedging.temperature(precision)
        print(f"hedged at precision {precision:g} (threshold {pred.hedging.threshold(precision):.4f}"
              f"{f' on probabilities at temperature {t:g}' if t != 1 else ''}; "
              f"{pred.hedging.guarantee(precision)}): see the node, is_leaf and needs_review columns")
    for _, r in fails.head(10).iterrows():
        print(f"  {r['item_id']}: {failure_text(r['modality'], r['reason'])}", file=sys.stderr)
    if len(fails) > 10:
        print(f"  ... and {len(fails) - 10} more (see the 'failures' column)", file=sys.stderr)
    return 0
