"""Pipeline: one orchestration for the notebooks' Workspace and `semcat train`; any catalog, an
external taxonomy, text-only, unlabelled rows; bad input stops at validate() with one sentence."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import semcat_kit as sk
from semcat_kit import cli
from semcat_kit.orchestrate.config import read_train_config
from semcat_kit import Pipeline, PipelineError

from conftest import SHARED_DATA

TOYS = SHARED_DATA / "amazon-uk-toys" / "products.csv"
TOYS_OPTIONS = {"id": "uniq_id", "title": "product_name", "path_col": "amazon_category_and_sub_category"}


@pytest.fixture(scope="module")
def toys_csv(tmp_path_factory):
    """600 real Amazon-toys rows (the 10 largest classes + 60 unlabelled), columns as in the file."""
    if not TOYS.is_file():
        pytest.skip(f"{TOYS} not found")
    df = pd.read_csv(TOYS, dtype=str)
    col = TOYS_OPTIONS["path_col"]
    top = df[col].value_counts().index[:10]
    lab = df[df[col].isin(top)].groupby(col).head(54)
    unl = df[df[col].isna()].head(60)
    path = tmp_path_factory.mktemp("toys") / "toys.csv"
    pd.concat([lab, unl]).sample(frac=1, random_state=0).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def pipe(toys_csv, tmp_path_factory):
    return Pipeline(catalog=str(toys_csv), catalog_options=TOYS_OPTIONS, image_encoder=None, k=5,
                    cache_dir=tmp_path_factory.mktemp("cache"))


def test_text_only_catalog_with_unlabelled_rows(pipe):
    s = pipe.validate()
    assert s["products"] == 600 and s["unlabelled"] == 60 and s["labelled"] == 540 and s["classes"] == 10
    y = pipe.labels()
    unl = pipe.unlabelled_rows()
    assert len(unl) == 60 and (y[unl] == -1).all() and pipe.load_catalog()["label"].iloc[unl].isna().all()
    rep = pipe.load_catalog().attrs["report"]
    assert set(rep.loc[rep["column"] == "label", "item_id"]) == set(pipe.unlabelled_catalog()["item_id"])
    sp = pipe.split()
    used = np.concatenate([sp.train, sp.val, sp.test])
    assert sorted(used.tolist()) == pipe.labelled_rows().tolist()      # unlabelled rows are in no part
    emb, yt = pipe.part("test")
    assert len(emb) == len(sp.test) and (yt >= 0).all() and emb.image is None
    assert len(pipe.embeddings(progress=False)) == 600                 # but they are encoded (to predict)
    assert pipe.neighbors().indices.shape == (10, 5)
    assert "catalog" in pipe.built and "split" in pipe.built


def test_release_catalog_keeps_every_stage_built_from_it_and_rereads_the_table_on_demand(toys_csv, tmp_path):
    p = Pipeline(catalog=str(toys_csv), catalog_options=TOYS_OPTIONS, image_encoder=None, k=5, cache_dir=tmp_path)
    y, sp = p.labels().copy(), p.split()
    emb = p.embeddings(progress=False)
    p.release_catalog()
    assert "catalog" not in p.built
    reads = []
    # private: counts the table's reads, an invariant (no re-read after release) no public call shows
    real = p._read_catalog
    p._read_catalog = lambda: reads.append(1) or real()
    e2, yt = p.part("test")                       # labels, split, embeddings: memoised, no re-read
    np.testing.assert_array_equal(p.labels(), y)
    assert p.split() is sp and p.embeddings() is emb and len(e2) == len(sp.test) and reads == []
    assert len(p.unlabelled_catalog()) == 60 and reads == [1] and "catalog" in p.built   # read again on demand


def test_external_taxonomy_classes_without_products_and_unknown_labels(pipe, toys_csv, tmp_path):
    classes = sorted(pipe.taxonomy().classes)
    extra = ["Hobbies > Kites", "Hobbies > Kites > Stunt Kites"]
    dropped = classes[0]                        # a catalog label the taxonomy lacks
    paths = classes[1:] + extra
    p = Pipeline(catalog=str(toys_csv), catalog_options=TOYS_OPTIONS, image_encoder=None, k=5,
                 taxonomy=paths, cache_dir=pipe.cache_dir)
    p.validate()
    tax = p.taxonomy()
    assert tax.classes == sorted(tax.classes) or set(tax.classes) == set(paths)
    assert tax.n_classes == len(paths)
    counts = p.class_counts()
    assert counts[extra].tolist() == [0, 0]                               # classes with no products exist
    nb = p.neighbors()
    assert nb.indices.shape == (len(paths), 5)                            # ... and have neighbours
    unk = p.unknown_labels()
    assert set(unk["label"]) == {dropped} and len(unk) == 54
    assert unk["suggestions"].map(len).gt(0).all()
    assert (p.labels()[unk["row"]] == -1).all() and set(unk["row"]) <= set(p.unlabelled_rows())
    # the same taxonomy saved to a file, and as a .txt of paths
    tax.save(tmp_path / "tax.json")
    (tmp_path / "tax.txt").write_text("# my paths\n" + "\n".join(paths) + "\n")
    for src in (tmp_path / "tax.json", tmp_path / "tax.txt", tax):
        assert sk.taxonomy.read_taxonomy(src).classes == tax.classes


def test_google_taxonomy_suggests_closest_paths(google_taxonomy_file):
    tax = sk.taxonomy.read_taxonomy(google_taxonomy_file)
    assert tax.n_classes == 5595
    s = sk.taxonomy.suggest_classes(["Toys > Puzzles", "Hobbies > Model Trains & Railway Sets > Rail Vehicles > Trains"],
                                    tax)
    assert "Toys & Games > Puzzles" in s["Toys > Puzzles"]
    assert any("Train" in c for c in s["Hobbies > Model Trains & Railway Sets > Rail Vehicles > Trains"])


@pytest.mark.parametrize("kwargs, match", [
    ({"catalog_options": {**TOYS_OPTIONS, "title": "name"}}, r"no column\(s\) \['name'\]; its columns are"),
    ({"catalog_options": {**TOYS_OPTIONS, "titel": "x"}}, "unknown key 'titel'"),
    ({"catalog_options": {"id": "uniq_id", "title": "product_name"}}, "needs 'path_col'"),
    ({"text_encoder": "minilmm"}, "'minilmm' is not a known encoder"),
    ({"k": 0}, "k must be a positive integer"),
    ({"val": 0.5, "test": 0.5}, "leaves nothing to train on"),
])
def test_bad_parameters_are_one_sentence_at_validate(toys_csv, kwargs, match):
    kw = {"catalog": str(toys_csv), "catalog_options": TOYS_OPTIONS, "image_encoder": None, **kwargs}
    with pytest.raises(PipelineError, match=match) as e:
        Pipeline(**kw).validate()
    assert "\n" not in str(e.value)
    assert e.value._render_traceback_() == [f"PipelineError: {e.value}"]   # Jupyter shows no traceback


def test_one_class_catalog_and_non_taxonomy_files(toys_csv, tmp_path):
    one = tmp_path / "one.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "title": ["x", "y", "z"], "cat": ["A > B"] * 2 + [None]}).to_csv(one, index=False)
    with pytest.raises(PipelineError, match=r"only one class \('A > B'\).*at least two classes"):
        Pipeline(catalog=str(one), catalog_options={"path_col": "cat"}, image_encoder=None).validate()
    for bad, match in ((toys_csv, "is not a taxonomy"), (tmp_path / "nope.txt", "does not exist")):
        with pytest.raises(PipelineError, match=match):
            Pipeline(catalog=str(toys_csv), catalog_options=TOYS_OPTIONS, image_encoder=None,
                     taxonomy=str(bad)).validate()
    (tmp_path / "t.json").write_text('{"a": 1}')
    with pytest.raises(PipelineError, match="not a saved Taxonomy"):
        Pipeline(catalog=str(toys_csv), catalog_options=TOYS_OPTIONS, image_encoder=None,
                 taxonomy=str(tmp_path / "t.json")).validate()
    with pytest.raises(PipelineError, match="both None"):
        Pipeline(text_encoder=None, image_encoder=None)


def test_parquet_and_dataframe_catalogs_read_like_the_csv(pipe, toys_csv, tmp_path):
    df = pd.read_csv(toys_csv, dtype=str)
    df.to_parquet(tmp_path / "toys.parquet")
    ref = pipe.load_catalog()
    for src in (tmp_path / "toys.parquet", df):
        cat = Pipeline(catalog=src, catalog_options=TOYS_OPTIONS, image_encoder=None).load_catalog()
        assert cat["item_id"].tolist() == ref["item_id"].tolist()
        assert cat["label"].isna().tolist() == ref["label"].isna().tolist()


def test_workspace_and_semcat_train_share_the_pipeline(pipe, toys_csv, tmp_path, capsys):
    """Same catalog and settings: the Workspace and `semcat train` see the same taxonomy, split and
    neighbours, and `semcat train` writes predictions for the unlabelled products."""
    import yaml

    ws = sk.Workspace(tmp_path / "w", catalog=str(toys_csv), catalog_options=TOYS_OPTIONS, image_encoder=None, k=5)
    cfg = {"text_encoder": "minilm", "image_encoder": None, "catalog": TOYS_OPTIONS, "neighbors": {"k": 5},
           "train": {"epochs": 2, "k": 5, "device": "cpu", "smoothing": "semantic"},
           "export": {"onnx": False, "pt2": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    tp = Pipeline.from_train_config(str(toys_csv), read_train_config(tmp_path / "c.yaml"))
    assert tp.taxonomy().classes == ws.taxonomy().classes
    for part in ("train", "val", "test"):
        assert np.array_equal(tp.split()[part], ws.split()[part])
    assert np.array_equal(tp.neighbors().indices, ws.neighbors().indices)
    rc = cli.main(["train", "--catalog", str(toys_csv), "--config", str(tmp_path / "c.yaml"),
                   "--out", str(tmp_path / "head"), "--cache-dir", str(pipe.cache_dir), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "60 unlabelled product(s)" in out
    preds = pd.read_csv(tmp_path / "head" / "unlabelled_predictions.csv", dtype={"item_id": str})
    assert sorted(preds["item_id"]) == sorted(ws.unlabelled_catalog()["item_id"])
    assert preds["pred_1"].isin(ws.taxonomy().classes).all()
    # the hedged summary accounts for every product: leaf + broader category + review = all of them
    leaf, review = preds["is_leaf"].astype(bool), preds["needs_review"].astype(bool)
    assert (f"{int(leaf.sum())} given a leaf, {int((~leaf & ~review).sum())} a broader category, "
            f"{int(review.sum())} marked needs_review") in out
    # the split is in the head folder, and the test ids are the pipeline's
    split = pd.read_csv(tmp_path / "head" / "split.csv", dtype=str)
    ids = tp.load_catalog()["item_id"].to_numpy()
    assert sorted(split.loc[split["split"] == "test", "item_id"]) == sorted(ids[tp.split()["test"]])
    assert not split["item_id"].isin(ws.unlabelled_catalog()["item_id"]).any()


def test_train_tune_and_encode_run_one_pipeline_with_a_taxonomy_and_unlabelled_rows(toys_csv, tmp_path, capsys):
    """`semcat train`, `tune` and `encode` from one config with `taxonomy:` (two classes without
    products) and unlabelled rows, on a sample: all three see the Pipeline's catalog and class set."""
    import yaml

    classes = sorted(pd.read_csv(toys_csv, dtype=str)[TOYS_OPTIONS["path_col"]].dropna().unique())
    extra = ["Toys & Games > Kites", "Toys & Games > Yo-yos"]
    (tmp_path / "tax.txt").write_text("\n".join(classes + extra) + "\n", encoding="utf-8")
    cfg = {"text_encoder": "hash-text:32", "image_encoder": None, "taxonomy": str(tmp_path / "tax.txt"),
           "sample": 400, "seed": 3, "catalog": TOYS_OPTIONS, "neighbors": {"k": 5},
           "train": {"epochs": 2, "k": 5, "device": "cpu", "smoothing": "semantic", "hidden": 32, "proj_dim": 16},
           "export": {"onnx": False, "pt2": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    pipe = Pipeline.from_train_config(str(toys_csv), read_train_config(tmp_path / "c.yaml"))
    cat = pipe.load_catalog()
    unl = pipe.unlabelled_catalog()
    assert len(cat) == 400 and len(unl) and pipe.taxonomy().n_classes == len(classes) + 2
    common = ["--catalog", str(toys_csv), "--config", str(tmp_path / "c.yaml"), "--cache-dir", str(tmp_path / "cache"),
              "--quiet"]

    assert cli.main(["train", *common, "--out", str(tmp_path / "head")]) == 0
    out = capsys.readouterr().out
    assert f"catalog: 400 products, {len(classes) + 2} classes" in out and f"{len(unl)} unlabelled product(s)" in out
    head = sk.load_head(tmp_path / "head")
    assert list(head.taxonomy.classes) == list(pipe.taxonomy().classes)   # the config's taxonomy, not the labels
    preds = pd.read_csv(tmp_path / "head" / "unlabelled_predictions.csv", dtype={"item_id": str})
    assert sorted(preds["item_id"]) == sorted(unl["item_id"])

    assert cli.main(["tune", *common, "--out", str(tmp_path / "tuned"), "--n-trials", "2",
                     "--objective", "top1"]) == 0
    out = capsys.readouterr().out
    assert f"catalog: 400 products, {len(classes) + 2} classes" in out and f"{len(unl)} unlabelled" in out
    sp = pipe.split()
    assert f"split: {len(sp.train)} train, {len(sp.val)} val, {len(sp.test)} test" in out
    assert len(pd.read_csv(tmp_path / "tuned" / "trials.csv")) == 2

    assert cli.main(["encode", *common, "--out", str(tmp_path / "emb")]) == 0
    out = capsys.readouterr().out
    assert "encoded text 0," in out                                       # train encoded them into the store
    emb = sk.Embeddings.load(tmp_path / "emb")
    assert emb.item_ids.tolist() == cat["item_id"].tolist()              # the same sample, unlabelled rows included
    np.testing.assert_array_equal(np.asarray(emb.text), np.asarray(pipe.embeddings(progress=False).text))


def test_letter_case_variants_of_a_real_catalog_merge_by_default_and_strict_names_file_lines(toys_csv, tmp_path):
    """One category spelled in another case (a brand written "fastrack" once beside "Fastrack"): merged
    with a warning into the spelling most items use; catalog_options label_case='strict' refuses, naming
    the CSV lines (header = line 1) of both spellings, each once."""
    import warnings

    df = pd.read_csv(toys_csv, dtype=str)
    col = TOYS_OPTIONS["path_col"]
    top = df[col].value_counts().index[0]
    k = int(np.flatnonzero(df[col].eq(top).to_numpy())[3])
    df.loc[k, col] = top.lower()                       # every level in lower case, once
    path = tmp_path / "cased.csv"
    df.to_csv(path, index=False)
    p = Pipeline(catalog=str(path), catalog_options=TOYS_OPTIONS, image_encoder=None)
    with pytest.warns(sk.taxonomy.LabelCaseWarning, match=r"letter case: '.*' \(1 item, first at line "
                                                          rf"{k + 2} \(item "):
        p.validate()
    tax = p.taxonomy()
    assert top in tax.classes and top.lower() not in tax.classes
    assert p.labels()[k] == tax.index_of(top)                       # the variant's product is trained on
    first = int(np.flatnonzero(df[col].eq(top).to_numpy())[0])
    strict = Pipeline(catalog=str(path), catalog_options={**TOYS_OPTIONS, "label_case": "strict"},
                      image_encoder=None)
    with warnings.catch_warnings(), pytest.raises(PipelineError) as e:
        warnings.simplefilter("error", sk.taxonomy.LabelCaseWarning)
        strict.validate()
    msg = str(e.value)
    assert f"first at line {first + 2} (item " in msg and f"first at line {k + 2} (item " in msg
    assert "different letter case" in msg and "Fix: write each category one way" in msg
    bad = Pipeline(catalog=str(path), catalog_options={**TOYS_OPTIONS, "label_case": "lower"}, image_encoder=None)
    with pytest.raises(PipelineError, match="label_case must be one of"):
        bad.validate()


def test_export_head_measures_on_the_split_and_lists_its_ids(pipe, tmp_path):
    """Pipeline.export_head (what `semcat train` and notebook 07 call): the head with its test metrics,
    hedging thresholds from the val part, the CRM verdict and split.csv; predicting the test ids with
    the exported head gives the recorded test top-1."""
    run = pipe.train(sk.TrainConfig(k=5, smoothing="semantic"), progress=False)
    rep = pipe.export_head(run, tmp_path / "h", metadata={"note": "kept"})
    head = sk.load_head(tmp_path / "h")
    meta = head.config["metadata"]
    assert meta["note"] == "kept" and meta["test_metrics"] == rep["test_metrics"] and rep["test_metrics"]["n"] > 0
    assert rep["test_metrics_text_only"] == {}                     # a text-only head: nothing to leave out
    assert rep["hedging"] is not None and head.config.get("hedging") and "crm_trust" in meta
    split = pd.read_csv(rep["split_file"], dtype=str)
    assert list(split.columns) == ["item_id", "split"] and meta["split"]["ids_file"] == "split.csv"
    sp = pipe.split()
    assert (split["split"].value_counts().to_dict()
            == {k: len(v) for k, v in (("train", sp.train), ("val", sp.val), ("test", sp.test)) if len(v)})
    test = pipe.part_catalog("test")
    assert sorted(split.loc[split["split"] == "test", "item_id"]) == sorted(test["item_id"])
    preds = sk.Predictor.load(tmp_path / "h").predict(test, top_k=1, cache_dir=pipe.cache_dir, progress=False)
    want = [pipe.taxonomy().classes[i] for i in pipe.part("test")[1]]
    assert float((preds["pred_1"].to_numpy() == np.asarray(want)).mean()) == pytest.approx(meta["test_metrics"]["top1"])
