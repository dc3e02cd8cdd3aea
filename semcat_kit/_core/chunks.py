"""How many rows a streaming stage handles at a time (one constant shared by the library and the CLI;
no heavy import, so ``semcat --help`` can read it)."""

#: Products read, encoded and scored at a time by ``Predictor.predict``, ``Pipeline.encode_store`` /
#: ``catalog_share`` and ``semcat predict`` / ``encode``: memory grows with it, not with the input size.
DEFAULT_CHUNK_SIZE = 8192
