"""Peak private memory (RssAnon) of ``semcat encode`` on a generated catalog CSV, in its own process.

    python _encode_memory_case.py stream|whole CSV CACHE_DIR

``stream``: ``semcat encode`` as it is (the file read chunk by chunk); ``whole``: what it did before
(the whole catalog loaded by the Pipeline, then ``encode_catalog`` on it). Prints
``peak_anon_mb: <peak - baseline>`` (baseline: RssAnon after imports, before the run).
"""
from __future__ import annotations

import sys
import threading


def _anon_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    import semcat_kit as sk
    from semcat_kit import cli
    from semcat_kit.encode.encoders import HashingTextEncoder

    mode, csv, cache = sys.argv[1:4]
    mapping = {"id": "sku", "title": "name", "path_col": "category"}
    cfg = f"{cache}.yaml"
    with open(cfg, "w", encoding="utf-8") as f:
        f.write("text_encoder: hash-text:32\nimage_encoder: null\ncatalog: {id: sku, title: name, path_col: category}\n")
    from semcat_kit._core.memory import release_freed_memory   # internal: the baseline after freeing (no public name)

    release_freed_memory()
    base = _anon_kb()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], _anon_kb())
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    if mode == "stream":
        rc = cli.main(["encode", "--catalog", csv, "--config", cfg, "--cache-dir", cache, "--quiet"])
        assert rc == 0
    else:   # the code semcat encode ran before it streamed
        catalog = sk.Pipeline(catalog=csv, catalog_options=mapping).load_catalog()
        sk.encode_catalog(catalog.iloc[0::1], text_encoder=HashingTextEncoder(32), cache_dir=cache, progress=False,
                          store_writer="r0")
    stop.set()
    t.join()
    peak[0] = max(peak[0], _anon_kb())
    print(f"peak_anon_mb: {(peak[0] - base) / 1024:.1f}")


if __name__ == "__main__":
    main()
