"""export_head / load_head: round trips on real tutorial embeddings (MiniLM titles + EfficientNet-Lite0
images) for the torch, ONNX and TorchScript backends, the folder's contents, atomicity of an
interrupted export, and every refusal (missing / corrupted / truncated / inconsistent files)."""
from __future__ import annotations

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
from semcat_kit._core.digest import file_sha256
from semcat_kit.ship.export import ExportError, export_head, load_head

torch.set_num_threads(1)
BACKENDS = ("torch", "onnx", "torchscript")


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
            np.testing.assert_allclose(bits, bits_ref, atol=1e-5, rtol=1e-6, err_msg=vname)
            np.testing.assert_allclose(got, ref, atol=1e-5, rtol=2e-6, err_msg=vname)
        else:
            np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0, err_msg=vname)
        np.testing.assert_allclose(head.predict_proba(e), run.predict_proba(e), atol=1e-5, err_msg=vname)
        # same top-1 decisions
        assert (got.argmax(1) == ref.argmax(1)).mean() == 1.0


def _bits(run, e):
    from semcat_kit._core.contracts import as_embedding_table

    d = as_embedding_table(e, "emb").with_modalities(run.model.text_dim, run.model.image_dim)
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
    assert cfg["train_config"] == run.config.to_dict()
    assert cfg["label_representation"] == {"kind": "codes", "file": "codes.safetensors",
                                           "n_bits": int(run.codes.shape[1])}
    assert sorted(cfg["files"]) == sorted(["head.safetensors", "codes.safetensors", "labels.json", "taxonomy.json",
                                           "head.onnx", "head.torchscript.pt"])
    for name, digest in cfg["files"].items():
        assert file_sha256(d / name) == digest
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


def test_without_onnx_and_torchscript(runs, tmp_path):
    d = export_head(runs["concat"], tmp_path / "h", onnx=False, torchscript=False)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "head.safetensors", "labels.json", "taxonomy.json"]
    with pytest.raises(ValueError, match=r"no head\.onnx .*onnx=False"):
        load_head(d, backend="onnx")
    with pytest.raises(ValueError, match=r"no head\.torchscript\.pt"):
        load_head(d, backend="torchscript")
    with pytest.raises(ValueError, match="backend must be one of"):
        load_head(d, backend="tensorrt")


def test_metadata_that_json_cannot_hold_is_named_before_writing(runs, tmp_path, monkeypatch):
    import semcat_kit.ship.export as ex

    monkeypatch.setattr(ex, "_export_onnx", lambda *a, **k: pytest.fail("exported before checking metadata"))
    with pytest.raises(TypeError, match=r"metadata\['split'\]\['when'\] \(object\) cannot be stored in config.json"):
        export_head(runs["concat"], tmp_path / "h", metadata={"n": np.int64(3), "split": {"when": object()}})
    assert not (tmp_path / "h").exists()
    d = export_head(runs["concat"], tmp_path / "h", onnx=False, torchscript=False,
                    metadata={"n": np.int64(3), "f": np.float32(0.5), "ids": np.arange(2)})
    assert load_head(d).config["metadata"] == {"n": 3, "f": 0.5, "ids": [0, 1]}


def test_existing_folder_needs_overwrite(runs, tmp_path):
    d = export_head(runs["text"], tmp_path / "h", onnx=False, torchscript=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_head(runs["concat"], d)
    export_head(runs["concat"], d, overwrite=True, onnx=False, torchscript=False)
    assert load_head(d).config["fusion"] == "concat"


# ------------------------------------------------------------------------------ atomicity
def test_interrupted_export_leaves_no_loadable_folder(runs, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(ex, "_export_onnx", boom)
    target = tmp_path / "new"
    with pytest.raises(RuntimeError, match="simulated"):
        export_head(runs["concat"], target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []          # no temporary folder left behind either


def test_interrupted_overwrite_keeps_the_old_export(runs, tmp_path, monkeypatch):
    old = export_head(runs["text"], tmp_path / "h", torchscript=False)
    before = {p.name: p.read_bytes() for p in old.iterdir()}

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "_export_torchscript", boom)
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
    cfg["files"][name] = file_sha256(d / name)
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
    raw = bytearray((d / "head.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "head.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"head\.safetensors is corrupted: sha256 .* does not match"):
        load_head(d)
    # corruption of a backend file is refused too, whatever the backend asked for
    d2 = _copy(exported["concat"], tmp_path / "h2")
    with open(d2 / "head.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match=r"head\.onnx is corrupted"):
        load_head(d2, backend="torch")


def test_truncated_safetensors_is_named(exported, tmp_path):
    d = _copy(exported["concat"], tmp_path / "h")
    raw = (d / "head.safetensors").read_bytes()
    (d / "head.safetensors").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match=r"head\.safetensors is corrupted"):
        load_head(d)
    _resign(d, "head.safetensors")        # even with a matching digest it cannot be read
    with pytest.raises(ValueError, match=r"head\.safetensors is unreadable .*truncated or corrupted"):
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
    with pytest.raises(ValueError, match="format version 99; .* reads version 1"):
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
