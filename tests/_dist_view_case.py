"""Run by tests/test_distributed.py under torchrun (or one process): ``encode_distributed`` on a catalog,
counting what this rank hashed.

    python _dist_view_case.py CATALOG.parquet CACHE_DIR OUT_PREFIX

Counts, independently of the library's own stats, the titles this rank hashed (``content_keys`` as
``semcat_kit.encode.batches`` calls it) and the image files it read (``read_image_bytes``), then writes
``OUT_PREFIX<rank>.npz``: the materialised vectors, masks, failures, stats and what it hashed and read;
also the view of a 1-row catalog (rank 1's share is empty) and two gathers of all_gather_rows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

import semcat_kit as sk  # noqa: E402
from semcat_kit import distributed  # noqa: E402
from semcat_kit.encode import batches as B  # noqa: E402  (where titles are hashed, images read)
from test_encode_stream import _Tiny  # noqa: E402  (the tests' tiny text encoder)


def main() -> None:
    catalog, cache, out = sys.argv[1], sys.argv[2], sys.argv[3]
    distributed.init_from_env(backend="gloo")
    titles, paths = [], []
    keys_of, read = B.content_keys, B.read_image_bytes

    def counting_keys(texts):
        titles.extend(texts)
        return keys_of(texts)

    def counting_read(path, *a, **kw):
        paths.append(str(path))
        return read(path, *a, **kw)
    B.content_keys, B.read_image_bytes = counting_keys, counting_read
    cat = pd.read_parquet(catalog)
    image = sk.encoders.load("efficientnet-lite0@64", device="cpu")
    emb = sk.encode_distributed(cat, _Tiny(), image, cache_dir=cache, progress=False, num_workers=0, batch_size=8,
                               chunk_size=7)
    hashed, opened = list(titles), list(paths)    # what the catalog's encoding hashed and read (not the next)
    one = sk.encode_distributed(cat.iloc[:1], _Tiny(), image, cache_dir=cache, progress=False, num_workers=0)
    r = distributed.rank()
    parts = distributed.all_gather_rows(np.full((r + 1, 2), r, dtype=np.int32))      # rank r: r + 1 rows
    try:                                             # 1 and 2 rows are not shares rows[r::2] of 3 rows
        distributed.all_gather_rows(np.zeros(r + 1, bool), interleave=True)
        refused = ""
    except ValueError as e:
        refused = str(e)
    np.savez(f"{out}{distributed.rank()}.npz", parts=np.concatenate(parts), refused=refused, text=np.asarray(emb.text), image=np.asarray(emb.image),
             text_mask=emb.text_mask, image_mask=emb.image_mask, ids=emb.item_ids,
             failures=json.dumps(emb.failures.values.tolist()), stats=json.dumps(emb.meta["stats"]),
             titles=np.array(hashed, dtype=object).astype(str), paths=np.array(opened, dtype=str),
             one_text=np.asarray(one.text), one_image=np.asarray(one.image),
             one_stats=json.dumps(one.meta["stats"]), world=distributed.world_size())
    distributed.shutdown()


if __name__ == "__main__":
    main()
