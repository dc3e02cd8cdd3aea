"""Catalogs and taxonomies: the data layer.

``report`` (``ProblemReport``: rows kept but needing attention), ``csv_files`` (the one CSV reader:
BOM, encoding, malformed lines repaired and reported), ``readers`` (``CatalogFile``: CSV/TSV,
Parquet, Arrow read in chunks, every column as text), ``image_files`` (a product's image file by
id), ``mapping`` (``load_catalog`` / ``load_catalog_chunks``: a file or DataFrame mapped to the
catalog columns), ``products`` (products to categorize: the one product mapper of ``Predictor`` and
``semcat predict``), ``sampling`` (a seeded sample of the products), ``bundled`` (the Kaggle fashion
layout, the bundled tutorial catalog), ``images`` (image bytes, checks, digests), ``taxonomy`` (the
tree, LCA distances, conflict policy, the Google Product Taxonomy reader), ``splits`` (stratified
train/val/test).
May import: ``_core``.
"""
from .bundled import FASHION_PATH_COLUMNS, load_fashion, load_fashion_tutorial, tutorial_dir
from .csv_files import read_csv, read_csv_chunks
from .image_files import IMAGE_EXTENSIONS, ImageFiles, image_paths_for
from .mapping import load_catalog, load_catalog_chunks
from .readers import CatalogFile
from .products import products_frame, read_products
from .report import ProblemReport
from .sampling import sample_catalog, sample_positions
from .taxonomy import load_google_taxonomy

__all__ = [
    "load_catalog",
    "read_csv",
    "read_csv_chunks",
    "CatalogFile",
    "load_catalog_chunks",
    "load_fashion",
    "load_fashion_tutorial",
    "load_google_taxonomy",
    "ProblemReport",
    "IMAGE_EXTENSIONS",
    "image_paths_for",
    "ImageFiles",
    "FASHION_PATH_COLUMNS",
    "tutorial_dir",
    "sample_catalog",
    "sample_positions",
    "products_frame",
    "read_products",
]
