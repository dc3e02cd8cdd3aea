"""Two CPU processes under torchrun (gloo) give the same head as one process with the same global batch."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import _torchrun as torchrun

HERE = Path(__file__).parent
# float32 sums in a different order (each rank's half-batch mean, then DDP's gradient all-reduce
# average, instead of one mean over the batch): differences of a few ulp per step, after 24 AdamW
# steps well below 1e-6 on weights of order 0.1-1 (measured: 3e-8; 1e-6 leaves 30x for other CPUs'
# summation orders while still catching a wrong batch split, which moves weights by ~1e-3).
ATOL = 1e-6


def _run(args, tmp_path, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    p = torchrun.run(args, tmp_path, env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_ddp_training_matches_one_process(tmp_path):
    _run([sys.executable, str(HERE / "_ddp_train.py"), str(tmp_path / "one.pt")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(HERE / "_ddp_train.py"), str(tmp_path / "two.pt"), str(tmp_path / "ck")], tmp_path)
    one = torch.load(tmp_path / "one.pt", weights_only=False)
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert one["world"] == 1 and two["world"] == 2
    for k, v in one["state"].items():
        assert torch.allclose(v, two["state"][k], atol=ATOL, rtol=0), (k, (v - two["state"][k]).abs().max())
    np.testing.assert_allclose(one["history"]["loss"], two["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(one["history"]["val_top1"], two["history"]["val_top1"])
    assert one["best_epoch"] == two["best_epoch"]
    # rank 0 alone wrote the checkpoint
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["last.pt"]


@pytest.mark.slow
def test_ddp_training_with_a_last_batch_smaller_than_the_number_of_ranks(tmp_path):
    """33 rows, batch 32, 2 ranks: the last global batch (1 row) would leave rank 1 with an empty
    step (NaN loss, a divergence error on that rank only); it is joined to the batch before it."""
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(HERE / "_ddp_train.py"), str(tmp_path / "two.pt")], tmp_path, {"SEMCAT_DDP_ROWS": "33"})
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert two["world"] == 2 and len(two["history"]["loss"]) == 3
    assert np.isfinite(two["history"]["loss"]).all()
    assert all(torch.isfinite(v).all() for v in two["state"].values())


def test_collective_timeout_comes_from_semcat_dist_timeout(monkeypatch):
    from semcat_kit import distributed

    monkeypatch.delenv("SEMCAT_DIST_TIMEOUT", raising=False)
    assert distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT_S == 1800.0
    monkeypatch.setenv("SEMCAT_DIST_TIMEOUT", "7200")
    assert distributed.timeout_seconds() == 7200.0
    for bad in ("0", "-5", "soon", "nan"):
        monkeypatch.setenv("SEMCAT_DIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match="SEMCAT_DIST_TIMEOUT"):
            distributed.timeout_seconds()
    seen = {}
    monkeypatch.setenv("SEMCAT_DIST_TIMEOUT", "90")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, timeout: seen.update(t=timeout))
    assert distributed.init_from_env(backend="gloo") is True
    assert seen["t"].total_seconds() == 90


@pytest.mark.slow
def test_semcat_train_under_torchrun_shares_the_encoding_between_ranks(tmp_path):
    """`torchrun --nproc-per-node=2 -m semcat_kit train --cache-dir ...`: each rank encodes its half
    of the catalog into the store (not rank 0 everything while the other waits), both then read
    every vector from it, train with DDP, and rank 0 exports a head that predicts; a second run
    encodes nothing."""
    import pandas as pd
    import yaml

    sys.path.insert(0, str(HERE))
    import _export_case as ec

    df = ec.sample()
    csv = tmp_path / "shop.csv"
    pd.DataFrame({"sku": df["item_id"], "name": df["title"], "category": df["label"]}).to_csv(csv, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "text_encoder": "minilm", "image_encoder": None, "catalog": {"id": "sku", "title": "name",
                                                                     "path_col": "category"},
        "train": {"epochs": 2, "proj_dim": 32, "hidden": 64, "batch_size": 64, "lr": 0.003, "device": "cpu",
                  "early_stopping": None},
        "export": {"onnx": False, "pt2": False}}))
    cache = tmp_path / "store"

    def run(out):
        return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                     "semcat_kit", "train", "--catalog", str(csv), "--config", str(cfg), "--out", str(out),
                     "--cache-dir", str(cache), "--quiet"], tmp_path, {"HF_HUB_OFFLINE": "1"})
    p = run(tmp_path / "h")
    import re

    lines = re.findall(r"rank (\d+)/2: encoded text (\d+), image - of its (\d+) products", p.stdout)
    got = {r: int(k) for r, k, _ in lines}      # searched anywhere: the two ranks print at the same moment
    assert sorted(int(n) for _, _, n in lines) == sorted([len(df) // 2, len(df) - len(df) // 2]), p.stdout
    # each rank encoded the distinct titles of its share, rows r::2 (the store was empty; a title in
    # both shares may be encoded by both, as they look up the store at the same moment)
    titles = df["title"].fillna("").str.strip()
    assert got == {str(r): titles.iloc[r::2][lambda s: s != ""].nunique() for r in (0, 1)}, p.stdout
    assert "test metrics (" in p.stdout
    import semcat_kit as sk

    pred = sk.Predictor.load(tmp_path / "h", device="cpu").predict(
        pd.DataFrame({"item_id": df["item_id"][:5], "title": df["title"][:5]}), progress=False)
    assert len(pred) == 5 and pred["pred_1"].notna().all()
    again = run(tmp_path / "h2")
    assert again.stdout.count("encoded text 0, image - of its") == 2, again.stdout


# ------------------------------------------------------------------ encode_distributed
@pytest.mark.slow
def test_encode_distributed_refuses_ranks_with_different_catalogs_or_unshared_stores(tmp_path):
    """Every rank raises (none trains on wrong data, none waits for the others): ranks whose
    catalogs have the same length but another order, and ranks whose stores are not one shared
    folder (a local --cache-dir on each of several machines)."""
    import json

    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
              str(HERE / "_dist_refuse_case.py"), str(tmp_path)], tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in (0, 1):
        got = json.loads((tmp_path / f"r{rank}.json").read_text())
        assert "different item_id sequences" in got["order"], got
        assert "missing from the store" in got["unshared"] and "shared by all machines" in got["unshared"], got


def _myntra_catalog(tmp_path, fashion_dir, myntra_styles):
    """31 real Myntra products (one with no title in the data), a corrupt image file, a missing image
    file, a title and an image shared by two rows (their content keys come from different ranks)."""
    import pandas as pd

    rows = list(range(30)) + [int(myntra_styles.index[myntra_styles["productDisplayName"].isna()][0])]
    df = myntra_styles.iloc[rows]
    cat = pd.DataFrame({"item_id": df["id"].astype(str).to_numpy(), "title": df["productDisplayName"].to_numpy(),
                        "image_path": [str(fashion_dir / "images" / f"{i}.jpg") for i in df["id"]]})
    assert cat["title"].isna().sum() == 1
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    cat.loc[3, "image_path"] = str(tmp_path / "corrupt.jpg")
    cat.loc[5, "image_path"] = str(tmp_path / "absent.jpg")
    cat.loc[7, "title"] = cat.loc[8, "title"]                 # rows 7 and 8: ranks 1 and 0
    cat.loc[9, "image_path"] = cat.loc[10, "image_path"]      # rows 9 and 10: ranks 1 and 0
    return cat


def _failure_set(failures):
    return sorted(map(tuple, (failures.values.tolist() if hasattr(failures, "values") else failures)))


def test_encode_distributed_on_one_process_equals_the_encode_catalog_view(tmp_path, fashion_dir, myntra_styles):
    """One process goes through the same function (rank 0 of 1): the same vectors, masks and
    failures as encode_catalog(view=True); it hashes each title and reads each image file once;
    failures come in catalog order (text first)."""
    import semcat_kit as sk
    from semcat_kit import encode_distributed
    from semcat_kit.encode.store import StoreRows

    sys.path.insert(0, str(HERE))
    from test_encode_stream import _Tiny

    cat = _myntra_catalog(tmp_path, fashion_dir, myntra_styles)
    image = sk.encoders.load("efficientnet-lite0@64", device="cpu")
    want = sk.encode_catalog(cat, _Tiny(), image, cache_dir=tmp_path / "c1", view=True, progress=False)
    got = encode_distributed(cat, _Tiny(), image, cache_dir=tmp_path / "c2", progress=False, chunk_size=7,
                             batch_size=8)
    assert isinstance(got.text, StoreRows) and isinstance(got.image, StoreRows)
    assert got.item_ids.tolist() == cat["item_id"].tolist()
    np.testing.assert_array_equal(np.asarray(got.text), np.asarray(want.text))
    np.testing.assert_allclose(np.asarray(got.image), np.asarray(want.image), atol=1e-5, rtol=0)  # batches differ
    np.testing.assert_array_equal(got.text_mask, want.text_mask)
    np.testing.assert_array_equal(got.image_mask, want.image_mask)
    assert _failure_set(got.failures) == _failure_set(want.failures) and len(got.failures) == 3
    assert got.failures["item_id"].tolist() == cat["item_id"][[30, 3, 5]].tolist()   # text first, then by row
    st = got.meta["stats"]
    assert st["view"] and st["world"] == 1 and st["n_by_rank"] == [31]
    assert st["text_hashed_by_rank"] == [30] and st["image_hashed_by_rank"] == [30]   # no title / no file: not hashed
    assert st["text_encoded"] == want.meta["stats"]["text_encoded"] == 29              # rows 7, 8: one title
    assert st["image_encoded"] == want.meta["stats"]["image_encoded"] == 28            # shared, corrupt, absent
    assert got.meta["text_encoder"] == want.meta["text_encoder"]
    again = encode_distributed(cat, _Tiny(), image, cache_dir=tmp_path / "c2", progress=False)
    assert again.meta["stats"]["text_encoded"] == again.meta["stats"]["image_encoded"] == 0
    np.testing.assert_array_equal(np.asarray(again.image), np.asarray(got.image))


@pytest.mark.slow
def test_encode_distributed_on_two_ranks_equals_one_process_and_each_rank_hashes_only_its_share(
        tmp_path, fashion_dir, myntra_styles):
    """torchrun, 2 CPU ranks (gloo): every rank gets the whole catalog's view, equal to one process's
    encode_catalog view (vectors, masks, failures incl. a missing title and a corrupt image); each
    rank hashed exactly the titles and read exactly the image files of its rows rank::2 (counted by
    wrapping the hashing and reading functions in the worker, and by the stats)."""
    import json

    import semcat_kit as sk

    sys.path.insert(0, str(HERE))
    from test_encode_stream import _Tiny

    cat = _myntra_catalog(tmp_path, fashion_dir, myntra_styles)
    cat.to_parquet(tmp_path / "cat.parquet")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(HERE / "_dist_view_case.py"), str(tmp_path / "cat.parquet"), str(tmp_path / "store"),
          str(tmp_path / "rank")], tmp_path, {"PYTHONPATH": str(HERE.parent), "HF_HUB_OFFLINE": "1"})
    image = sk.encoders.load("efficientnet-lite0@64", device="cpu")
    want = sk.encode_catalog(cat, _Tiny(), image, cache_dir=tmp_path / "one", view=True, progress=False)
    encoded = {"text": 0, "image": 0}
    for r in (0, 1):
        z = np.load(tmp_path / f"rank{r}.npz", allow_pickle=False)
        assert int(z["world"]) == 2
        assert z["ids"].tolist() == cat["item_id"].tolist()
        np.testing.assert_array_equal(z["text"], np.asarray(want.text))
        # images: each rank embedded its own batches (other compositions than one process): ~1e-7
        np.testing.assert_allclose(z["image"], np.asarray(want.image), atol=1e-5, rtol=0)
        np.testing.assert_array_equal(z["text_mask"], want.text_mask)
        np.testing.assert_array_equal(z["image_mask"], want.image_mask)
        assert _failure_set(json.loads(str(z["failures"]))) == _failure_set(want.failures)
        mine = cat.iloc[r::2]
        titles = mine["title"].dropna().tolist()
        paths = mine["image_path"].tolist()
        assert sorted(z["titles"].tolist()) == sorted(titles)           # its share's titles, each once
        assert sorted(z["paths"].tolist()) == sorted(paths)             # its share's files, each once
        st = json.loads(str(z["stats"]))
        assert st["world"] == 2 and st["n_by_rank"] == [16, 15]
        assert st["text_hashed_by_rank"][r] == len(titles)
        assert st["image_hashed_by_rank"][r] == sum(p != str(tmp_path / "absent.jpg") for p in paths)
        for m in encoded:
            encoded[m] = st[f"{m}_encoded"]
            assert sum(st[f"{m}_encoded_by_rank"]) == st[f"{m}_encoded"]
        # a 1-row catalog: rank 1's share is empty, both ranks still get the row
        np.testing.assert_array_equal(z["one_text"], np.asarray(want.text)[:1])
        assert json.loads(str(z["one_stats"]))["n_by_rank"] == [1, 0]
        # all_gather_rows: ranks of different lengths in rank order; interleaving refused on both ranks
        assert z["parts"].tolist() == [[0, 0], [1, 1], [1, 1]]
        assert "hold [1, 2] rows" in str(z["refused"])
    # rows 7/8 (one title) and 9/10 (one image file) are on different ranks: encoded once or twice
    # (both ranks may miss it before either writes), never more; everything else exactly once
    assert 29 <= encoded["text"] <= 30 and 28 <= encoded["image"] <= 29


def test_a_run_that_aborts_at_gloo_teardown_is_repeated_once_in_a_clean_folder(tmp_path):
    """tests/_torchrun.run: the teardown abort repeats the command once, after removing what the first
    attempt wrote; a second abort, or any other failure, is returned as it is (the test then fails)."""
    work, state = tmp_path / "work", tmp_path / "state"
    work.mkdir()
    state.mkdir()
    (work / "kept.txt").write_text("there before")
    script = tmp_path / "case.py"
    script.write_text(
        "import os, sys, pathlib\n"
        f"state = pathlib.Path({str(state)!r})\n"
        "n = len(list(state.iterdir())); (state / str(n)).touch()\n"
        "pathlib.Path('written').mkdir(); (pathlib.Path('written') / str(n)).touch()\n"
        "aborts = int(sys.argv[1])\n"
        "if n < aborts:\n"
        f"    print({torchrun.TEARDOWN_ABORT!r}, file=sys.stderr); sys.exit(134)\n"
        "sys.exit(int(sys.argv[2]))\n")
    with pytest.warns(UserWarning, match="running it again once"):
        p = torchrun.run([sys.executable, str(script), "1", "0"], work, None)
    assert p.returncode == 0 and [f.name for f in (work / "written").iterdir()] == ["1"]
    assert (work / "kept.txt").read_text() == "there before"
    for f in state.iterdir():
        f.unlink()
    import shutil
    shutil.rmtree(work / "written")
    with pytest.warns(UserWarning, match="running it again once"):
        p = torchrun.run([sys.executable, str(script), "2", "0"], work, None)      # twice: returned, not hidden
    assert p.returncode == 134
    for f in state.iterdir():
        f.unlink()
    shutil.rmtree(work / "written")
    p = torchrun.run([sys.executable, str(script), "0", "3"], work, None)          # another failure: no repeat
    assert p.returncode == 3 and len(list(state.iterdir())) == 1
