"""export_head / load_head: round trips on real tutorial embeddings (MiniLM titles + EfficientNet-Lite0
images) for the torch, ONNX and TorchScript backends, the folder's contents, atomicity of an
interrupted export, and every refusal (missing / corrupted / truncated / inconsistent files)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import _export_case as ec
import semcat_kit as sk
from semcat_kit import export as ex
from semcat_kit.encode.embeddings import Embeddings
from semcat_kit.ship.export import ExportError, export_head, load_head

torch.set_num_threads(1)
BACKENDS = ("torch", "onnx", "pt2")


@pytest.fixture(scope="module")
def data(request):
    cache = request.config.cache.mkdir("semcat_export_emb")
    df = ec.sample()
    emb = ec.embed(df, cache)
    y = ec.taxonomy().index_of(df["label"].tolist())
    return df, emb, y


@pytest.fixture(scope="module")
def runs(data):
    _, emb, y = data
    return {"concat": ec.train_head(emb, y),
            "gated-codes": ec.train_head(emb, y, fusion="gated", label_repr="codes"),
            "text": ec.train_head(emb, y, fusion="text")}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    return {name: export_head(run, root / name) for name, run in runs.items()}


def _variants(emb: Embeddings) -> dict[str, Embeddings]:
    """All images present; every other image missing; titles missing for a third; no image table."""
    half = emb.take(np.arange(len(emb)))
    half.image_mask[::2] = False
    half.image[::2] = 0
    no_title = emb.take(np.arange(len(emb)))
    no_title.text_mask[::3] = False
    no_title.text[::3] = 0
    text_only = Embeddings(emb.item_ids, emb.text, None, emb.text_mask, np.zeros(len(emb), bool), meta=emb.meta)
    return {"all": emb, "half_images": half, "some_titles_missing": no_title, "no_image_table": text_only}


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["concat", "gated-codes", "text"])
def test_reloaded_head_reproduces_logits(data, runs, exported, name, backend):
    _, emb, _ = data
    run = runs[name]
    head = load_head(exported[name], backend=backend)
    assert head.backend == backend and head.classes == list(ec.taxonomy().classes)
    for vname, e in _variants(emb).items():
        ref = run.predict_logits(e)
        got = head.predict_logits(e)
        assert got.shape == (len(emb), ec.taxonomy().n_classes) and got.dtype == np.float32
        if name == "gated-codes":
            # bit logits reach |x| ~ 15 (1 ulp ~ 1e-6): onnxruntime's GEMM may differ by a few ulps there;
            # class scores sum ~190 bit terms (|score| ~ 35), so they are compared relatively too
            bits_ref = _bits(run, e)
            bits = head._run(head._arrays(e))   # private: the bit logits, which no public call returns
            # the dynamo ONNX graph decomposes the gated fusion's ops (layer norm, sigmoid gate) in
            # another order than torch: up to ~2e-5 relative on converged bit logits (|x| ~ 25)
            tol = dict(atol=2e-4, rtol=2e-5) if backend == "onnx" else dict(atol=1e-5, rtol=1e-6)
            np.testing.assert_allclose(bits, bits_ref, err_msg=vname, **tol)
            tol = dict(atol=2e-3, rtol=2e-5) if backend == "onnx" else dict(atol=1e-5, rtol=2e-6)
            np.testing.assert_allclose(got, ref, err_msg=vname, **tol)
        else:
            # converged heads reach |logit| ~ 17: the dynamo ONNX graph (fused GEMMs) may differ by a few ulps
            np.testing.assert_allclose(got, ref, atol=1e-5, rtol=2e-6, err_msg=vname)
        np.testing.assert_allclose(head.predict_proba(e), run.predict_proba(e), atol=1e-5, err_msg=vname)
        # same top-1 decisions
        assert (got.argmax(1) == ref.argmax(1)).mean() == 1.0


def _bits(run, e):
    from semcat_kit import contracts

    d = contracts.as_embedding_table(e, "emb").with_modalities(run.model.text_dim, run.model.image_dim)
    with torch.no_grad():
        return run.model(d.text, d.image, image_mask=d.image_mask, text_mask=d.text_mask).numpy()


def test_missing_images_change_the_prediction(data, runs, exported):
    """The presence mask reaches every backend: dropping the images changes the logits."""
    _, emb, _ = data
    v = _variants(emb)
    for backend in BACKENDS:
        head = load_head(exported["concat"], backend=backend)
        a, b = head.predict_logits(v["all"]), head.predict_logits(v["half_images"])
        assert np.abs(a[1::2] - b[1::2]).max() < 1e-5          # rows with images: unchanged
        assert np.abs(a[::2] - b[::2]).max() > 1e-2            # rows without: different


def test_folder_contents(data, runs, exported):
    _, emb, _ = data
    run, d = runs["gated-codes"], exported["gated-codes"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["format"] == "semcat_kit.head" and cfg["format_version"] == ex.FORMAT_VERSION
    assert cfg["package_version"] == sk.__version__
    assert cfg["architecture"] == run.model.config
    assert cfg["input_dims"] == {"text": 384, "image": 1280}
    assert cfg["inputs"] == ["text", "image", "text_mask", "image_mask"]
    assert cfg["fusion"] == "gated"
    assert cfg["encoders"]["text_encoder"] == emb.meta["text_encoder"]
    assert cfg["encoders"]["image_encoder"] == emb.meta["image_encoder"]
    assert cfg["encoders"]["text_encoder"]["fingerprint"] == ec.encoders()[0].fingerprint
    assert cfg["train_config"] == json.loads(json.dumps(run.config.to_dict()))     # tuples are JSON lists
    assert cfg["label_representation"] == {"kind": "codes", "file": "codes.safetensors",
                                           "n_bits": int(run.codes.shape[1])}
    assert sorted(cfg["files"]) == sorted(["model.safetensors", "codes.safetensors", "labels.json", "taxonomy.json",
                                           "head.onnx", "head.pt2"])
    for name, digest in cfg["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest
    labels = json.loads((d / "labels.json").read_text())
    tax = ec.taxonomy()
    assert [r["label"] for r in labels] == list(tax.classes) and [r["index"] for r in labels] == list(range(tax.n_classes))
    assert [r["name"] for r in labels] == list(tax.names)
    assert sk.Taxonomy.load(d / "taxonomy.json").classes == tax.classes
    head = load_head(d)
    np.testing.assert_array_equal(head.codes, run.codes)
    assert head.encoder_meta == cfg["encoders"] and head.taxonomy.n_classes == tax.n_classes
    # the onehot head stores no codes
    cfg1 = json.loads((exported["concat"] / "config.json").read_text())
    assert cfg1["label_representation"] == {"kind": "onehot"}
    assert not (exported["concat"] / "codes.safetensors").exists()
    assert json.loads((exported["text"] / "config.json").read_text())["inputs"] == ["text", "text_mask"]


def test_without_onnx_and_pt2(runs, tmp_path):
    d = export_head(runs["concat"], tmp_path / "h", onnx=False, pt2=False)
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "config.json", "labels.json", "model.safetensors",
                                                   "taxonomy.json"]
    with pytest.raises(ValueError, match=r"no head\.onnx .*onnx=False"):
        load_head(d, backend="onnx")
    with pytest.raises(ValueError, match=r"no head\.pt2 .*pt2=False"):
        load_head(d, backend="pt2")
    with pytest.warns(FutureWarning, match="replaced by 'pt2'"), pytest.raises(ValueError, match=r"no head\.pt2"):
        load_head(d, backend="torchscript")
    with pytest.raises(ValueError, match="backend must be one of"):
        load_head(d, backend="tensorrt")


def test_metadata_that_json_cannot_hold_is_named_before_writing(runs, tmp_path, monkeypatch):
    import semcat_kit.ship.export as ex

    # private: the metadata is checked before any graph is exported (no public hook shows the order)
    monkeypatch.setattr(ex, "_export_onnx", lambda *a, **k: pytest.fail("exported before checking metadata"))
    with pytest.raises(TypeError, match=r"metadata\['split'\]\['when'\] \(object\) cannot be stored in config.json"):
        export_head(runs["concat"], tmp_path / "h", metadata={"n": np.int64(3), "split": {"when": object()}})
    assert not (tmp_path / "h").exists()
    d = export_head(runs["concat"], tmp_path / "h", onnx=False, pt2=False,
                    metadata={"n": np.int64(3), "f": np.float32(0.5), "ids": np.arange(2)})
    assert load_head(d).config["metadata"] == {"n": 3, "f": 0.5, "ids": [0, 1]}


def test_existing_folder_needs_overwrite(runs, tmp_path):
    d = export_head(runs["text"], tmp_path / "h", onnx=False, pt2=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_head(runs["concat"], d)
    export_head(runs["concat"], d, overwrite=True, onnx=False, pt2=False)
    assert load_head(d).config["fusion"] == "concat"


# ------------------------------------------------------------------------------ atomicity
def test_interrupted_export_leaves_no_loadable_folder(runs, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(torch.onnx, "export", boom)     # the ONNX export fails half-way
    target = tmp_path / "new"
    with pytest.raises(RuntimeError, match="simulated"):
        export_head(runs["concat"], target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []          # no temporary folder left behind either


def test_interrupted_overwrite_keeps_the_old_export(runs, tmp_path, monkeypatch):
    old = export_head(runs["text"], tmp_path / "h", pt2=False)
    before = {p.name: p.read_bytes() for p in old.iterdir()}

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.export, "save", boom)    # interrupted while writing head.pt2
    with pytest.raises(KeyboardInterrupt):
        export_head(runs["concat"], old, overwrite=True)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert load_head(old).config["fusion"] == "text"
    assert [p.name for p in tmp_path.iterdir()] == ["h"]


def test_a_graph_that_disagrees_with_torch_is_not_written(runs, tmp_path, monkeypatch):
    """The export checks its own ONNX file with onnxruntime: a wrong graph aborts the export."""
    real = ex._export_onnx     # private: a wrong graph is injected where the export writes it (no public hook)

    def wrong(wrapper, probe, path):
        import copy

        w = copy.deepcopy(wrapper)
        with torch.no_grad():
            w.head.mlp[-1].bias += 0.5
        real(w, probe, path)

    monkeypatch.setattr(ex, "_export_onnx", wrong)
    with pytest.raises(ExportError, match="onnx export check failed: .* differ .* by up to 0.5"):
        export_head(runs["concat"], tmp_path / "h")
    assert not (tmp_path / "h").exists()


# ------------------------------------------------------------------------------ refusals
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _resign(d: Path, name: str) -> None:
    """Record a modified file's new sha256 (a consistent-looking but wrong folder)."""
    cfg = json.loads((d / "config.json").read_text())
    cfg["files"][name] = hashlib.sha256((d / name).read_bytes()).hexdigest()
    (d / "config.json").write_text(json.dumps(cfg))


def test_missing_file_is_named(exported, tmp_path):
    d = _copy(exported["concat"], tmp_path / "h")
    (d / "labels.json").unlink()
    with pytest.raises(ValueError, match=r"labels\.json is missing"):
        load_head(d)
    d2 = _copy(exported["concat"], tmp_path / "h2")
    (d2 / "config.json").unlink()
    with pytest.raises(ValueError, match=r"config\.json is missing"):
        load_head(d2)
    with pytest.raises(FileNotFoundError, match="no exported head"):
        load_head(tmp_path / "nowhere")


def test_corrupted_file_is_named(exported, tmp_path):
    d = _copy(exported["concat"], tmp_path / "h")
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupted: sha256 .* does not match"):
        load_head(d)
    # corruption of a backend file is refused too, whatever the backend asked for
    d2 = _copy(exported["concat"], tmp_path / "h2")
    with open(d2 / "head.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match=r"head\.onnx is corrupted"):
        load_head(d2, backend="torch")


def test_truncated_safetensors_is_named(exported, tmp_path):
    d = _copy(exported["concat"], tmp_path / "h")
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupted"):
        load_head(d)
    _resign(d, "model.safetensors")        # even with a matching digest it cannot be read
    with pytest.raises(ValueError, match=r"model\.safetensors is unreadable .*truncated or corrupted"):
        load_head(d)


def test_labels_that_do_not_match_the_head(exported, tmp_path):
    d = _copy(exported["concat"], tmp_path / "h")
    labels = json.loads((d / "labels.json").read_text())
    (d / "labels.json").write_text(json.dumps(labels[:-1]))
    _resign(d, "labels.json")
    n = len(labels)
    with pytest.raises(ValueError, match=rf"labels\.json lists {n - 1} classes but the head outputs {n} classes"):
        load_head(d)
    # same size, other classes than the taxonomy
    d2 = _copy(exported["concat"], tmp_path / "h2")
    labels[0]["label"] = "Apparel > Topwear > Spacesuits"
    (d2 / "labels.json").write_text(json.dumps(labels))
    _resign(d2, "labels.json")
    with pytest.raises(ValueError, match=r"labels\.json and taxonomy\.json disagree"):
        load_head(d2)


def test_other_format_version_is_refused(exported, tmp_path):
    d = _copy(exported["concat"], tmp_path / "h")
    cfg = json.loads((d / "config.json").read_text())
    cfg["format_version"] = 99
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"format version 99; .* reads versions \[1, 2\]"):
        load_head(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is corrupted \(not valid JSON"):
        load_head(d)


def test_embeddings_from_another_encoder_are_refused(data, exported):
    _, emb, _ = data
    head = load_head(exported["concat"])
    other = emb.take(np.arange(10))
    other.meta["image_encoder"] = {"name": "efficientnet-lite0@128", "fingerprint": "efficientnet-lite0:0000",
                                   "dim": 1280}
    want = emb.meta["image_encoder"]["fingerprint"]
    with pytest.raises(ValueError, match=rf"fingerprint efficientnet-lite0:0000.*fingerprint {want}"):
        head.predict_logits(other)
    # the text-only head does not read images, so their encoder does not matter
    assert load_head(exported["text"]).predict_logits(other).shape[0] == 10
    wrong_dim = Embeddings(emb.item_ids[:5], emb.text[:5, :100], None, np.ones(5, bool), np.zeros(5, bool))
    with pytest.raises(ValueError, match="dimension 100 but the model expects 384"):
        head.predict_logits(wrong_dim)


def test_export_needs_a_train_run(tmp_path):
    with pytest.raises(TypeError, match="needs a TrainRun"):
        export_head(object(), tmp_path / "h")


def test_image_only_head_round_trip(tmp_path):
    """Small generated case: an image-only head (no text table at all) through every backend."""
    rng = np.random.default_rng(0)
    n = 50
    tax = sk.Taxonomy.from_paths(["A > a", "A > b", "B > c"])
    emb = Embeddings([str(i) for i in range(n)], None, rng.normal(size=(n, 8)).astype(np.float32),
                     np.zeros(n, bool), rng.random(n) > 0.2)
    run = sk.train(emb, np.arange(n) % 3, taxonomy=tax, progress=False,
                   config=sk.TrainConfig(epochs=1, proj_dim=4, hidden=4, device="cpu", early_stopping=None,
                                         fusion="image"))
    d = export_head(run, tmp_path / "h")
    assert json.loads((d / "config.json").read_text())["inputs"] == ["image", "image_mask"]
    for backend in BACKENDS:
        head = load_head(d, backend=backend)
        assert head.uses == ("image",)
        np.testing.assert_allclose(head.predict_logits(emb), run.predict_logits(emb), atol=1e-5, err_msg=backend)


def test_lazy_embeddings_predict_like_in_memory(data, exported, tmp_path):
    """Memory-mapped folders and StoreRows views on the embedding store (encode_catalog at scale)
    are read block by block by the head (no (N, d) copy) and give the in-memory logits."""
    from semcat_kit.encode.store import StoreRows, VectorStore, content_keys

    _, emb, _ = data
    e = emb.take(np.arange(len(emb)))
    e.image_mask[::2] = False
    e.image[::2] = 0
    keys = content_keys(e.item_ids.tolist())
    views = {}
    for name in ("text", "image"):
        st = VectorStore(tmp_path / name, getattr(e, name).shape[1])
        m = getattr(e, f"{name}_mask")
        st.put(keys[m], getattr(e, name)[m])
        st.flush()
        views[name] = st.locate(keys, valid=m)
    v = Embeddings(e.item_ids, views["text"], views["image"], e.text_mask, e.image_mask, meta=e.meta)
    assert isinstance(v.text, StoreRows) and isinstance(v.image, StoreRows)
    mm = Embeddings.load(e.save(tmp_path / "folder"))
    assert isinstance(mm.text, np.memmap)
    for backend in ("torch", "onnx"):
        head = load_head(exported["concat"], backend=backend)
        ref = head.predict_logits(e, batch_size=7)
        np.testing.assert_allclose(head.predict_logits(v, batch_size=7), ref, atol=1e-6)
        np.testing.assert_allclose(head.predict_logits(mm, batch_size=7), ref, atol=1e-6)


# ------------------------------------------------------------------------------ issue 24: formats
DATA = Path(__file__).parent / "data"
OLD = DATA / "head_v0_1_0"


def test_current_export_is_torch_export_and_dynamo_onnx_without_torchscript(data, exported):
    """No TorchScript in a current export; head.pt2 is a torch.export archive; the ONNX graph has a
    dynamic batch axis and is read by onnxruntime."""
    import onnx
    import onnxruntime as ort

    d = exported["concat"]
    assert not list(d.glob("*torchscript*")) and not list(d.glob("*.pt"))
    program = torch.export.load(str(d / "head.pt2"))
    assert isinstance(program, torch.export.ExportedProgram)
    model = onnx.load(str(d / "head.onnx"))
    assert model.opset_import[0].version >= ex.ONNX_OPSET
    sess = ort.InferenceSession(str(d / "head.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["text", "image", "text_mask", "image_mask"]
    assert all(isinstance(i.shape[0], str) for i in sess.get_inputs())          # a symbolic batch size
    emb = data[1]
    ref = load_head(d)
    for backend in ("onnx", "pt2"):                                              # 1 row and 0 rows
        head = load_head(d, backend=backend)
        for rows in ([3], []):
            got = head.predict_logits(emb.take(rows))
            assert got.shape == (len(rows), head.n_classes)
            np.testing.assert_allclose(got, ref.predict_logits(emb.take(rows)), atol=1e-5)


def test_export_shows_no_deprecation_warning(runs, tmp_path):
    """_quiet() is gone: nothing deprecated is used, so nothing is hidden."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_head(runs["text"], tmp_path / "h")
        load_head(tmp_path / "h", backend="pt2")
        load_head(tmp_path / "h", backend="onnx")
    bad = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not bad, [str(w.message)[:200] for w in bad]
    assert not hasattr(ex, "_quiet")
    with pytest.warns(FutureWarning, match="replaced by pt2"):
        d = export_head(runs["text"], tmp_path / "h2", onnx=False, torchscript=False)
    assert "pt2" not in load_head(d).config["backends"]


def test_model_card_is_generated(runs, tmp_path):
    run = runs["concat"]
    meta = {"test_metrics": {"top1": 0.8125, "mistake_severity": 1.5, "n": 40}, "catalog": "tutorial.csv",
            "n_products": 240, "split": {"n_train": 160, "n_val": 40, "n_test": 40}}
    d = export_head(run, tmp_path / "h", onnx=False, pt2=False, metadata=meta)
    card = (d / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: semcat_kit\n")
    tax = ec.taxonomy()
    assert f"({tax.n_classes:,} classes)" in card and "## Intended use" in card and "## Training data" in card
    assert "| train items | 160 |" in card and "| catalog | tutorial.csv |" in card
    assert "| test | top1 | 0.8125 |" in card and "| test | n | 40 |" in card
    assert f"- {tax.classes[0]}" in card and f"... and {tax.n_classes - 40:,} more" in card
    for key in ("text_encoder", "image_encoder"):
        assert f"`{run.encoder_meta[key]['name']}`" in card
    assert "Predictor.from_pretrained" in card and "(`concat` fusion)" in card
    # the card is not checksummed: editing it (as on the Hub) keeps the head loadable
    (d / "README.md").write_text(card + "\nEdited by hand.\n")
    assert "README.md" not in load_head(d).config["files"]


def test_save_pretrained_and_from_pretrained_local_and_hub_cache(data, runs, exported, tmp_path, monkeypatch):
    """from_pretrained takes a folder, or a Hub repo id served from the local Hub cache (no network)."""
    _, emb, _ = data
    src = exported["gated-codes"]
    head = ex.ExportedHead.from_pretrained(src)
    copy_ = head.save_pretrained(tmp_path / "copy")
    assert sorted(p.name for p in copy_.iterdir()) == sorted(p.name for p in src.iterdir())
    np.testing.assert_allclose(ex.ExportedHead.from_pretrained(copy_, backend="onnx").predict_proba(emb),
                               head.predict_proba(emb), atol=1e-5)
    # a Hub cache laid out as huggingface_hub writes it: models--owner--name/{refs/main, snapshots/<rev>/...}
    cache = tmp_path / "hub"
    rev = "0" * 40
    snap = cache / "models--semcat--toy-head" / "snapshots" / rev
    shutil.copytree(src, snap)
    (cache / "models--semcat--toy-head" / "refs").mkdir()
    (cache / "models--semcat--toy-head" / "refs" / "main").write_text(rev)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = ex.ExportedHead.from_pretrained("semcat/toy-head", cache_dir=cache, local_files_only=True)
    np.testing.assert_allclose(hub.predict_proba(emb), head.predict_proba(emb), atol=1e-6)
    pred = sk.Predictor.from_pretrained("semcat/toy-head", cache_dir=cache, local_files_only=True, device="cpu",
                                        text_encoder=ec.encoders()[0], image_encoder=ec.encoders()[1])
    assert pred.classes == head.classes
    with pytest.raises(FileNotFoundError, match="could not be fetched"):
        ex.ExportedHead.from_pretrained("semcat/not-there", cache_dir=cache, local_files_only=True)
    with pytest.raises(FileNotFoundError, match="no exported head"):
        ex.ExportedHead.from_pretrained(tmp_path / "nowhere" / "x")


def test_committed_old_head_still_loads():
    """tests/data/head_v0_1_0: exported by semcat_kit 0.1 (format 1: head.safetensors, TorchScript,
    legacy ONNX). It loads, verified, on torch, onnx and (with a FutureWarning) torchscript, and
    reproduces the logits recorded when it was exported; asking it for pt2 says what to do."""
    import pandas as pd

    cfg = json.loads((OLD / "config.json").read_text())
    assert cfg["format_version"] == 1 and "head.torchscript.pt" in cfg["files"]
    products = pd.read_csv(DATA / "head_v0_1_0_products.csv")
    want = np.load(DATA / "head_v0_1_0_logits.npy")
    enc = sk.encoders.load("hash-text:32")
    emb = sk.encode_catalog(products[["item_id", "title"]], text_encoder=enc, progress=False)
    for backend in ("torch", "onnx"):
        np.testing.assert_allclose(load_head(OLD, backend=backend).predict_logits(emb), want, atol=1e-5)
    with pytest.warns(FutureWarning, match="torch.jit"):
        ts = load_head(OLD, backend="torchscript")
    np.testing.assert_allclose(ts.predict_logits(emb), want, atol=1e-5)
    with pytest.raises(ValueError, match="exported by semcat_kit 0.1 with TorchScript.*re-export"):
        load_head(OLD, backend="pt2")
    pred = sk.Predictor.load(OLD, device="cpu")               # its encoder is found by its recorded name
    res = pred.predict(products[["item_id", "title"]], top_k=2, progress=False)
    assert res["pred_1"].tolist() == [pred.classes[i] for i in want.argmax(1)]
    # corruption is still caught in a version-1 folder
    assert set(cfg["files"]) == {"head.safetensors", "labels.json", "taxonomy.json", "head.onnx", "head.torchscript.pt"}
