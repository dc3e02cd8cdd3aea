"""docs/scale.md's measured figures come from the benchmarks: the committed page must be what
bench/scale_doc.py renders from the committed docs/scale_measured.json, and that JSON must have
the shape the benchmarks write (stage names, fields, bench_store keys). Fast: no benchmark runs."""
from __future__ import annotations

import copy
import importlib
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
scale_doc = importlib.import_module("scale_doc")
bench_scale = importlib.import_module("bench_scale")

STAGE_FIELDS = ("items", "seconds", "rss_anon_mb", "rss_file_mb")


@pytest.fixture(scope="module")
def measured():
    return json.loads(scale_doc.JSON_PATH.read_text(encoding="utf-8"))


def test_committed_page_is_rendered_from_the_committed_measurements(measured):
    page = scale_doc.DOC_PATH.read_text(encoding="utf-8")
    assert page.count(scale_doc.BEGIN) == 1 and page.count(scale_doc.END) == 1
    assert scale_doc.splice(page, scale_doc.render(measured)) == page, \
        "docs/scale.md is stale: run python bench/scale_doc.py (or the benchmarks with --write-doc)"
    assert scale_doc.main(["--check"]) == 0


def test_measurements_have_the_shape_the_benchmarks_write(measured):
    registered = {name for name, _ in bench_scale.STAGES}
    assert set(scale_doc.SCALE_STAGES) <= registered and set(bench_scale.ORDER) == registered
    runs = measured["bench_scale"]
    assert runs, "no bench_scale run recorded"
    assert "1000000" in runs, "the 1M run is what the 10M table is derived from"
    for n, run in runs.items():
        assert int(n) > 0 and {"stages", "ratios", "load", "cpus", "threads"} <= set(run)
        assert set(run["stages"]) <= registered, set(run["stages"]) - registered
        for name, st in run["stages"].items():
            assert all(f in st for f in STAGE_FIELDS), (n, name)
            assert st["items"] > 0 and st["seconds"] > 0 and st["rss_anon_mb"] > 0
            if st.get("extrapolated_from_steps"):
                assert {"items_per_s", "total_steps", "epoch_seconds"} <= set(st)
    big = runs["1000000"]["stages"]
    assert {"store_build", "train_epoch_store", "predict_chunked", "encode_text_store"} <= set(big)
    store = measured["bench_store"]
    assert store and all(k in store for k in scale_doc.STORE_KEYS)
    src = (ROOT / "bench" / "bench_store.py").read_text(encoding="utf-8")
    written = set(re.findall(r'"(\w+)":', src)) | set(re.findall(r"(\w+)=", src))
    assert set(scale_doc.STORE_KEYS) <= written, set(scale_doc.STORE_KEYS) - written


def test_render_follows_the_data(measured):
    """The tables are derived from the numbers (a changed rate changes the 10M estimate)."""
    a = scale_doc.render(measured)
    m = copy.deepcopy(measured)
    st = m["bench_scale"]["1000000"]["stages"]["predict_chunked"]
    st["seconds"] *= 2
    st.pop("items_per_s", None)
    assert scale_doc.render(m) != a
    with pytest.raises(ValueError, match="markers"):
        scale_doc.splice("no markers here", a)
    assert "No measurement" in scale_doc.render({"bench_scale": {}, "bench_store": None})
