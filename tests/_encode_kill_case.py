"""Run by tests/test_encode_stream.py: ``semcat encode`` with a slow tiny text encoder, to be killed
with SIGKILL mid-run (no ``finally``, no flush) and then run again.

    python _encode_kill_case.py CSV CACHE_DIR SLEEP_S COUNT_FILE

Appends the number of titles the encoder computed in each batch to COUNT_FILE (flushed per batch).
"""
from __future__ import annotations

import sys
import time


def main() -> None:
    import semcat_kit as sk
    from semcat_kit import cli
    from semcat_kit.encode.encoders import HashingTextEncoder

    csv, cache, sleep_s, counts = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

    class Slow(HashingTextEncoder):            # the library's 8-d hash-of-the-title encoder, slowed
        def __init__(self):
            super().__init__(8)

        def _embed_texts(self, texts):
            time.sleep(sleep_s)
            with open(counts, "a", encoding="ascii") as f:
                f.write(f"{len(texts)}\n")
            return super()._embed_texts(texts)

    sk.encoders.register("tiny-kill", lambda arg, device="auto", **kw: Slow(), overwrite=True)
    cfg = f"{cache}.yaml"
    with open(cfg, "w", encoding="utf-8") as f:
        f.write("text_encoder: tiny-kill\nimage_encoder: null\ncatalog: {id: sku, title: name, path_col: category}\n")
    rc = cli.main(["encode", "--catalog", csv, "--config", cfg, "--cache-dir", cache, "--quiet",
                   "--chunk-size", "100", "--batch-size", "50"])
    sys.exit(rc)


if __name__ == "__main__":
    main()
