"""Catalogs and taxonomies: the data layer.

``catalog`` (CSV/TSV/Parquet/Arrow readers, column mapping, image lookup, bundled tutorial),
``images`` (image bytes, checks, digests), ``taxonomy`` (the tree, LCA distances, conflict policy,
the Google Product Taxonomy reader), ``splits`` (stratified train/val/test).
May import: ``_core``.
"""
from .catalog import *  # noqa: F401,F403  (sk.datasets.load_catalog, ...)
from .catalog import __all__
