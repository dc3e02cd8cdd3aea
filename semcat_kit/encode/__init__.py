"""Frozen encoders and the embeddings they produce.

``encoders`` (the registry: ``load(name)``), ``store`` (out-of-core, memory-mapped Arrow shards keyed
by content hash), ``embeddings`` (``Embeddings``: vectors, masks, failures; saved and loaded),
``columns`` (the catalog columns the encoders read, from a DataFrame or a file in chunks),
``batches`` (one column encoded batch by batch against the store), ``encode`` (``encode_catalog``,
``encode_into_store``), ``sharded`` (``encode_distributed``: each ``torchrun`` rank its share).
May import: ``_core``, ``datasets``.
"""
