"""Finding ``DIR/<id>.<ext>`` for a catalog's ids: ``datasets.image_paths_for`` (per-id ``lstat``
probes) vs the folder listing it replaced (every entry of the folder read into a stem -> name dict,
then one dict look-up per id; a copy is kept below).

In one run, on a generated folder of ``--n`` empty files in a temporary folder (96% ``p<i>.jpg``,
every 25th ``p<i>.png``: not settled by a ``.jpg`` probe, so the new lookup also lists the folder
once, for mixed-case extensions), for three catalogs:

* ``all``: every file's id (the .png ones among them);
* ``1pct``: a random 1% of the ids (.png ones among them, so one listing for mixed case);
* ``1pct_jpg``: a random 1% of the ``.jpg`` ids (no listing at all).

Both sides return the same list of paths (checked). Times are the best of ``--repeat`` runs, each
from a cold start of the lookup (the new lookup's per-folder cache of mixed-case names is
cleared); the folder's directory entries are in the OS cache for both (one listing before timing).
Peak Python memory (tracemalloc, separate runs) is what each side allocates besides its result.
Prints ``time_s:``, ``peak_py_mb:`` and ``ratio:`` lines (new / old: below 1 is better for new).

Usage: python bench/bench_image_lookup.py [--n 100000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semcat_kit import datasets as D  # noqa: E402
from semcat_kit.datasets import image_files  # noqa: E402


def old_lookup(ids, images_dir) -> list:
    """What ``load_catalog(images_dir=)`` did before: list the folder into a dict (a Python string
    per file), then look each id up (paths of regular files only, as the loader kept them)."""
    rank = {e: k for k, e in enumerate(D.IMAGE_EXTENSIONS)}
    best: dict = {}
    with os.scandir(images_dir) as it:
        for entry in it:
            stem, dot, ext = entry.name.rpartition(".")
            r = rank.get(ext.lower())
            if not dot or r is None:
                continue
            if not entry.is_file():
                best.setdefault(stem, (len(rank), "\0" + entry.name))
                continue
            if stem not in best or r < best[stem][0]:
                best[stem] = (r, entry.name)
    base = os.path.join(str(images_dir), "")
    out = []
    for i in ids:
        hit = best.get(i)
        out.append(None if hit is None or hit[1].startswith("\0") else base + hit[1])
    return out


def new_lookup(ids, images_dir) -> list:
    image_files._MIXED_CASE.clear()   # private: a cold start (the first call in a process lists for mixed case)
    got = D.image_paths_for(ids, images_dir, progress=False)
    return [p if f else None for p, f in zip(got.paths, got.is_file.tolist())]


def make_folder(root: Path, n: int) -> list[str]:
    names = [f"p{i}.png" if i % 25 == 0 else f"p{i}.jpg" for i in range(n)]
    for name in names:
        os.close(os.open(root / name, os.O_CREAT | os.O_WRONLY, 0o644))
    return names


def timed(fn, ids, folder, repeat: int) -> tuple[float, list]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(ids, folder)
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_mb(fn, ids, folder) -> float:
    """Peak traced Python memory of ``fn`` beyond its result (both results are the same list)."""
    tracemalloc.start()
    out = fn(ids, folder)
    _, peak = tracemalloc.get_traced_memory()
    cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out
    return (peak - cur) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="files in the generated folder")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import numpy as np

    root = Path(tempfile.mkdtemp(prefix="semcat-bench-images-"))
    try:
        t = time.perf_counter()
        names = make_folder(root, args.n)
        print(f"folder: {args.n:,} empty files in {root} ({time.perf_counter() - t:.1f} s to make)", flush=True)
        ids = [n.rsplit(".", 1)[0] for n in names]
        rng = np.random.default_rng(0)
        jpg = [i for i, n in zip(ids, names) if n.endswith(".jpg")]
        catalogs = {"all": ids,
                    "1pct": [ids[k] for k in rng.choice(len(ids), max(1, len(ids) // 100), replace=False)],
                    "1pct_jpg": [jpg[k] for k in rng.choice(len(jpg), max(1, len(ids) // 100), replace=False)]}
        old_lookup(ids[:1], root)                                   # directory entries into the OS cache
        for name, cat in catalogs.items():
            t_old, want = timed(old_lookup, cat, root, args.repeat)
            t_new, got = timed(new_lookup, cat, root, args.repeat)
            assert got == want, f"{name}: the lookups disagree"
            m_old, m_new = peak_mb(old_lookup, cat, root), peak_mb(new_lookup, cat, root)
            print(f"time_s: {name} ({len(cat):,} ids) listing {t_old:.3f} probing {t_new:.3f}", flush=True)
            print(f"peak_py_mb: {name} listing {m_old:.1f} probing {m_new:.1f}", flush=True)
            print(f"ratio: image_lookup_time_{name} {t_new / t_old:.3f} (probing / listing; "
                  f"{len(cat):,} of {args.n:,} files)", flush=True)
            print(f"ratio: image_lookup_peak_mem_{name} {m_new / max(m_old, 1e-9):.3f} (probing / listing)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
