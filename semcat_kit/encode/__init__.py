"""Frozen encoders and the embeddings they produce.

``encoders`` (the registry: ``load(name)``), ``store`` (out-of-core, memory-mapped Arrow shards keyed
by content hash), ``embeddings`` (``Embeddings``, ``encode_catalog``, ``encode_into_store``,
``encode_distributed``).
May import: ``_core``, ``datasets``.
"""
