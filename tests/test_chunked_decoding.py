"""CRM decoding per chunk equals CRM on the whole matrix bit for bit (indices and expected costs),
exact and top-m, on the Google taxonomy (5,595 classes, depths 1..7): the predictor and the
streaming evaluator decode chunk by chunk."""
from __future__ import annotations

import numpy as np
import pytest

import semcat_kit as sk
from semcat_kit.judge.decoding import crm_predict, crm_rerank, topk


@pytest.fixture(scope="module")
def google(google_taxonomy_file):
    return sk.Taxonomy.from_google_taxonomy(google_taxonomy_file)


@pytest.mark.parametrize("top_m", [None, 50])
def test_crm_per_chunk_equals_one_shot(google, top_m):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(google.n_classes, 0.02), size=150).astype(np.float32)
    idx, cost = crm_predict(p, google, top_k=5, top_m=top_m)
    for sizes in ([1] * 3 + [147], [7] * 21 + [3], [64, 64, 22]):
        bounds = np.cumsum([0, *sizes])
        parts = [crm_predict(p[a:b], google, top_k=5, top_m=top_m) for a, b in zip(bounds[:-1], bounds[1:])]
        np.testing.assert_array_equal(np.concatenate([x[0] for x in parts]), idx)
        np.testing.assert_array_equal(np.concatenate([x[1] for x in parts]), cost)
    # and the per-row scores too (what evaluate(crm=True) ranks by)
    s = crm_rerank(p[:20], google, top_m=top_m)
    np.testing.assert_array_equal(np.concatenate([crm_rerank(p[i:i + 1], google, top_m=top_m) for i in range(20)]), s)
    assert not np.array_equal(idx[:, 0], topk(p, 1)[:, 0])           # CRM really re-ranks here
