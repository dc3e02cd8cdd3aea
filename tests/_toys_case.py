"""A labelled slice of the Amazon toys catalog (text only) encoded with MiniLM, shared by
test_estimator and test_label_noise. The embedding cache lives in pytest's cache folder."""
from __future__ import annotations

import pandas as pd
import pytest

import _export_case as ec
import semcat_kit as sk
from conftest import SHARED_DATA

TOYS = SHARED_DATA / "amazon-uk-toys" / "products.csv"
COL = "amazon_category_and_sub_category"


def toys(cache_dir, n_classes: int = 14, per_class: int = 50):
    """``(catalog, emb, taxonomy)``: ``per_class`` products of each of the ``n_classes`` largest categories."""
    if not TOYS.is_file():
        pytest.skip(f"{TOYS} not found")
    df = pd.read_csv(TOYS, dtype=str)
    top = df[COL].value_counts().index[:n_classes]
    df = df[df[COL].isin(top)].groupby(COL).head(per_class).sample(frac=1, random_state=0).reset_index(drop=True)
    cat = pd.DataFrame({"item_id": df["uniq_id"], "title": df["product_name"], "label": df[COL]})
    emb = sk.encode_catalog(cat, text_encoder=ec.encoders()[0], cache_dir=cache_dir, progress=False)
    return cat, emb, sk.Taxonomy.from_paths(cat["label"])
