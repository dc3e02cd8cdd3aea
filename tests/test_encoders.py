"""Encoders: offline defaults with their real weights, the registry, and open_clip with a tiny local model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import semcat_kit as sk
from semcat_kit.datasets.images import ImageError

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def minilm():
    return sk.encoders.load("minilm")


@pytest.fixture(scope="module")
def effnet():
    return sk.encoders.load("efficientnet-lite0")


def _ids_of(styles, article, n):
    return styles.loc[styles["articleType"] == article, "id"].head(n).tolist()


def _norms(x):
    return np.linalg.norm(x, axis=1)


# ------------------------------------------------------------------------------------ minilm
def test_minilm_shapes_norms_and_semantics(minilm):
    assert minilm.name == "minilm" and minilm.text_dim == 384 and minilm.image_dim is None and minilm.dim == 384
    x = minilm.encode_texts(["Men Navy Blue Check Shirt", "Blue checked shirt for men", "Women Gold Analog Watch"])
    assert x.dtype == np.float32 and x.shape == (3, 384)
    np.testing.assert_allclose(_norms(x), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # paraphrase much closer than an unrelated product


def test_loading_minilm_draws_no_weights_bar_and_restores_the_setting(capfd):
    """transformers' "Loading weights" bar is a widget in a notebook (JupyterLab could miss it on a
    busy start: tests/test_browser.py saw "widget model not found"); the encoder loads without it."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    sk.encoders.load("minilm")
    assert "Loading weights" not in capfd.readouterr().err
    assert tlog.is_progress_bar_enabled() == was


def test_minilm_batching_does_not_change_vectors(minilm):
    texts = [f"Puma Men Black Running Shoe size {i}" for i in range(7)]
    a = minilm.encode_texts(texts, batch_size=2)
    b = np.concatenate([minilm.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert minilm.encode_texts([]).shape == (0, 384)


def test_texts_are_batched_by_length_and_returned_in_input_order(minilm, monkeypatch):
    """Batches are cut from the titles sorted by length (less padding); the rows come back in the
    caller's order, equal to encoding each title alone. The column encoder (``encode_catalog``) batches
    its cache misses the same way."""
    from semcat_kit.encode.encoders._base import length_order

    texts = ["Men Navy Blue Check Shirt with a long description of its collar and cuffs and buttons",
             "Watch", "Women Gold Analog Watch", "Shoe", "Puma Men Black Running Shoe size 9 for the road", "Cap"]
    np.testing.assert_array_equal(length_order(texts), [5, 3, 1, 2, 4, 0])
    seen = []
    real = type(minilm)._embed_texts
    monkeypatch.setattr(type(minilm), "_embed_texts", lambda self, b: (seen.append(list(b)), real(self, b))[1])
    a = minilm.encode_texts(texts, batch_size=2)
    assert seen == [["Cap", "Shoe"], ["Watch", "Women Gold Analog Watch"], [texts[4], texts[0]]]
    seen.clear()
    b = np.concatenate([minilm.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(a, b, atol=1e-5)

    seen.clear()
    cat = pd.DataFrame({"item_id": [f"p{i}" for i in range(len(texts))], "title": texts})
    emb = sk.encode_catalog(cat, text_encoder=minilm, image_encoder=None, batch_size=2, progress=False)
    assert seen == [["Cap", "Shoe"], ["Watch", "Women Gold Analog Watch"], [texts[4], texts[0]]]
    np.testing.assert_allclose(np.asarray(emb.text), b, atol=1e-5)


def test_minilm_bad_input_and_unsupported_modality(minilm, fashion_dir):
    with pytest.raises(TypeError, match="item 1"):
        minilm.encode_texts(["ok", None])
    with pytest.raises(TypeError, match="single str"):
        minilm.encode_texts("just one string")
    with pytest.raises(NotImplementedError, match="does not encode images"):
        minilm.encode_images([fashion_dir / "images" / "15970.jpg"])


def test_st_prefix_loads_any_sentence_transformers_folder(minilm):
    from semcat_kit.encode.encoders._sentence import minilm_path   # private: the bundled model's folder, no public name

    st = sk.encoders.load(f"st:{minilm_path()}")
    assert st.text_dim == 384 and st.name.startswith("st:")
    texts = ["Nike Men White Sports Shoe", "Lakme Lipstick"]
    np.testing.assert_allclose(st.encode_texts(texts), minilm.encode_texts(texts), atol=1e-5)
    with pytest.raises(ValueError, match="st:<model folder"):
        sk.encoders.load("st:")
    with pytest.raises(ValueError, match="takes no argument"):
        sk.encoders.load("minilm:large")


def test_fingerprints_are_stable_and_distinct(minilm, effnet):
    again = sk.encoders.load("minilm")
    assert again.fingerprint == minilm.fingerprint
    e96 = sk.encoders.load("efficientnet-lite0@96")
    assert e96.fingerprint != effnet.fingerprint != minilm.fingerprint
    assert sk.encoders.load("efficientnet-lite0", resolution=96).fingerprint == e96.fingerprint


# ------------------------------------------------------------------------------ efficientnet
def test_efficientnet_every_weight_key_maps_onto_timm():
    import timm

    # private: the bundled weight file and the key map, an invariant of the loader no public call exposes
    from semcat_kit.encode.encoders import _efficientnet

    src = torch.load(_efficientnet._weights_path(), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    mapped = {_efficientnet.remap_key(k): v for k, v in src.items()}
    assert len(mapped) == len(src) == len(target) == 296
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)


@pytest.mark.parametrize("article,keywords,control", [
    ("Watches", ("watch", "clock", "stopwatch"), "Tshirts"),
    ("Sunglasses", ("sunglass",), "Casual Shoes"),
    ("Backpacks", ("backpack",), "Tshirts"),
])
def test_efficientnet_imagenet_predictions_are_sensible(effnet, myntra_styles, fashion_dir, article, keywords,
                                                        control):
    def hits(art):
        ids = _ids_of(myntra_styles, art, 10)
        top = effnet.imagenet_topk([fashion_dir / "images" / f"{i}.jpg" for i in ids], k=5)
        return sum(any(k in desc.lower() for desc, _ in t for k in keywords) for t in top), top

    n_target, top = hits(article)
    n_control, _ = hits(control)
    assert n_target >= 5 and n_control <= 1, (article, n_target, n_control, top)


def test_efficientnet_embeddings(effnet, myntra_styles, fashion_dir):
    assert effnet.image_dim == 1280 and effnet.text_dim is None
    assert effnet.name == f"efficientnet-lite0@{sk.encoders.DEFAULT_RESOLUTION}"
    ids = _ids_of(myntra_styles, "Watches", 3) + _ids_of(myntra_styles, "Tshirts", 3)
    paths = [fashion_dir / "images" / f"{i}.jpg" for i in ids]
    x = effnet.encode_images(paths, batch_size=4)
    assert x.dtype == np.float32 and x.shape == (6, 1280)
    np.testing.assert_allclose(_norms(x), 1.0, atol=1e-5)
    # path, str, raw bytes and PIL inputs give the same vector
    alt = effnet.encode_images([Image.open(paths[0]), str(paths[0]), paths[0].read_bytes()])
    np.testing.assert_allclose(alt, np.repeat(x[:1], 3, axis=0), atol=1e-5)
    # same-category photos are closer than cross-category ones
    s = x @ x.T
    within = (s[:3, :3].sum() - 3) / 6 + (s[3:, 3:].sum() - 3) / 6
    assert within / 2 > s[:3, 3:].mean() + 0.05


def test_efficientnet_resolution_and_errors(effnet, fashion_dir, tmp_path):
    e = sk.encoders.load("efficientnet-lite0@96")
    assert e.resolution == 96 and e.name == "efficientnet-lite0@96"
    img = Image.open(fashion_dir / "images" / "15970.jpg").convert("RGB")
    t = e.image_transform(img)
    assert t.shape == (3, 96, 96)
    assert torch.allclose(t[:, 0, 0], torch.ones(3))  # white letterbox padding -> +1 after (x-.5)/.5
    with pytest.raises(ValueError, match="resolution"):
        sk.encoders.load("efficientnet-lite0@abc")
    with pytest.raises(ValueError, match="resolution"):
        sk.encoders.load("efficientnet-lite0@8")
    with pytest.raises(NotImplementedError, match="does not encode texts"):
        effnet.encode_texts(["a shirt"])
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="image 1: missing file"):
        effnet.encode_images([fashion_dir / "images" / "15970.jpg", missing])


def test_letterbox_keeps_aspect_ratio():
    tr = sk.encoders.LetterboxTransform(40)
    img = Image.new("RGB", (20, 40), (0, 0, 0))  # tall black image
    t = tr(img)
    assert t.shape == (3, 40, 40)
    assert torch.allclose(t[:, :, 20], -torch.ones(3, 40))  # centre column: black, full height
    assert torch.allclose(t[:, :, :10], torch.ones(3, 40, 10))  # left band: white padding


# ---------------------------------------------------------------------------------- registry
def test_registry_unknown_and_custom_encoder():
    with pytest.raises(KeyError, match="minilm"):
        sk.encoders.load("no-such-encoder")

    class Hashing(sk.encoders.Encoder):
        def __init__(self, dim, device="auto"):
            self.device, self.half = sk.encoders.encoder_device(device)
            self.name, self.text_dim, self.image_dim = f"hashing{dim}", dim, None
            self.fingerprint = "hashing:" + sk.encoders.settings_digest({"dim": dim})

        def _embed_texts(self, texts):
            out = np.zeros((len(texts), self.text_dim), np.float32)
            for i, t in enumerate(texts):
                for w in t.split():
                    out[i, hash(w) % self.text_dim] += 1
            return out

    sk.encoders.register("hashing-test", lambda arg, device="auto", **kw: Hashing(int(arg or 8), device=device))
    try:
        enc = sk.encoders.load("hashing-test:16")
        assert enc.text_dim == 16 and "hashing-test" in sk.encoders.available()
        x = enc.encode_texts(["a b", "a b", ""])
        np.testing.assert_allclose(x[0], x[1])
        assert np.allclose(x[2], 0)  # an all-zero row stays zero, no NaN
        with pytest.raises(ValueError, match="already registered"):
            sk.encoders.register("hashing-test", lambda arg, **kw: None)
        sk.encoders.register("hashing-test", lambda arg, device="auto", **kw: "not an encoder", overwrite=True)
        with pytest.raises(TypeError, match="not an Encoder"):
            sk.encoders.load("hashing-test")
    finally:
        sk.encoders._REGISTRY.pop("hashing-test", None)   # private: the registry has no public unregister
    with pytest.raises(ValueError, match="prefix"):
        sk.encoders.register("bad:name", lambda arg, **kw: None)


def test_resolve_device():
    dev, half = sk.encoders.encoder_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu") and half == (dev.type == "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            sk.encoders.encoder_device("cuda")
        with pytest.raises(ValueError, match="half"):
            sk.encoders.encoder_device("cpu", half=True)


# --------------------------------------------------------------------------------- open_clip
@pytest.fixture(scope="module")
def tiny_clip_ckpts(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    sk.encoders.register_openclip_config("semcat-tiny-clip", TINY_CLIP)
    d = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    m1 = open_clip.create_model("semcat-tiny-clip")
    torch.save(m1.state_dict(), d / "tiny.pt")
    torch.manual_seed(1)
    m2 = open_clip.create_model("semcat-tiny-clip")
    save_file({k: v.contiguous() for k, v in m2.state_dict().items()}, str(d / "tiny2.safetensors"))
    return {"pt": d / "tiny.pt", "st": d / "tiny2.safetensors", "model_pt": m1.eval()}


def test_openclip_local_checkpoint_loads_the_real_weights(tiny_clip_ckpts, fashion_dir):
    enc = sk.encoders.load(f"openclip:semcat-tiny-clip@{tiny_clip_ckpts['pt']}")
    assert enc.text_dim == enc.image_dim == enc.dim == 32
    assert enc.name == f"openclip:semcat-tiny-clip@{tiny_clip_ckpts['pt']}"
    assert sk.encoders.load(enc.name).fingerprint == enc.fingerprint  # the name loads the same model again
    t = enc.encode_texts(["a red dress", "a steel watch"])
    i = enc.encode_images([fashion_dir / "images" / "15970.jpg"])
    assert t.shape == (2, 32) and i.shape == (1, 32) and t.dtype == i.dtype == np.float32
    np.testing.assert_allclose(_norms(np.vstack([t, i])), 1.0, atol=1e-5)
    # identical to the model the checkpoint was saved from
    import open_clip

    ref = tiny_clip_ckpts["model_pt"]
    with torch.no_grad():
        rt = ref.encode_text(open_clip.get_tokenizer("semcat-tiny-clip")(["a red dress", "a steel watch"]))
    np.testing.assert_allclose(t, torch.nn.functional.normalize(rt, dim=-1).numpy(), atol=1e-5)
    # other weights -> other fingerprint and other vectors
    enc2 = sk.encoders.load(f"openclip:semcat-tiny-clip@{tiny_clip_ckpts['st']}")
    assert enc2.fingerprint != enc.fingerprint
    assert not np.allclose(enc2.encode_texts(["a red dress"]), t[:1], atol=1e-3)


def test_openclip_checkpoint_of_another_architecture_is_refused(tiny_clip_ckpts, tmp_path):
    other = dict(TINY_CLIP, embed_dim=16)
    sk.encoders.register_openclip_config("semcat-tiny-clip-16", other)
    with pytest.raises(RuntimeError, match="could not load open_clip checkpoint"):
        sk.encoders.load(f"openclip:semcat-tiny-clip-16@{tiny_clip_ckpts['pt']}")


def test_openclip_zero_shot(tiny_clip_ckpts, fashion_dir):
    enc = sk.encoders.load(f"openclip:semcat-tiny-clip@{tiny_clip_ckpts['pt']}")
    classes = ["shirt", "watch", "shoe", "bag"]
    paths = [fashion_dir / "images" / f"{i}.jpg" for i in (15970, 39386, 59263)]
    p = enc.zero_shot_proba(classes, images=paths, templates=["a photo of a {}."])
    assert p.shape == (3, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    # equals the textbook computation: softmax(scale * cos(image, mean-of-template text embeddings))
    img = enc.encode_images(paths)
    cls = enc.encode_texts([f"a photo of a {c}." for c in classes])
    ref = torch.from_numpy(enc.logit_scale * img @ cls.T).softmax(-1).numpy()
    np.testing.assert_allclose(p, ref, atol=1e-5)
    # precomputed embeddings give the same answer; a lower temperature sharpens without reordering
    np.testing.assert_allclose(enc.zero_shot_proba(classes, image_embeddings=img, templates=["a photo of a {}."]),
                               p, atol=1e-6)
    soft = enc.zero_shot_proba(classes, image_embeddings=img, temperature=1.0)
    sharp = enc.zero_shot_proba(classes, image_embeddings=img, temperature=0.01)
    assert (soft.argmax(1) == sharp.argmax(1)).all() and (sharp.max(1) > soft.max(1)).all()
    with pytest.raises(ValueError, match="placeholder"):
        enc.zero_shot_proba(classes, image_embeddings=img, templates=["no placeholder"])
    with pytest.raises(ValueError, match="exactly one"):
        enc.zero_shot_proba(classes)
    with pytest.raises(ValueError, match=r"\(N, 32\)"):
        enc.zero_shot_proba(classes, image_embeddings=np.zeros((2, 5), np.float32))


def test_openclip_name_errors(tmp_path):
    with pytest.raises(ValueError, match="openclip:<arch>/<pretrained tag>"):
        sk.encoders.load("openclip:ViT-B-32")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        sk.encoders.load("openclip:NoSuchArch/whatever")
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):  # lists the known tags, before any download
        sk.encoders.load("openclip:ViT-B-32/no-such-tag")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        sk.encoders.load(f"openclip:ViT-B-32@{tmp_path / 'missing.pt'}")
    with pytest.raises(ValueError, match="embed_dim"):
        sk.encoders.register_openclip_config("broken", {"vision_cfg": {}})


def test_hash_text_encoder_is_registered_deterministic_and_checked():
    """The library's model-free test encoder (tests and benchmarks share it): ``hash-text:<dim>``,
    the title's 16-byte content key minus 127.5, mirrored, tiled to ``dim``, L2-normalised."""
    from semcat_kit.encode.store import content_keys

    enc = sk.encoders.load("hash-text:8")
    assert isinstance(enc, sk.encoders.HashingTextEncoder) and enc.modalities == ("text",)
    assert (enc.name, enc.text_dim, enc.fingerprint) == ("hash-text:8", 8, "hash-text:8:v1")
    assert sk.encoders.load(enc.name).fingerprint == enc.fingerprint      # its name loads it back
    titles = ["red toy car", "red toy car", "blue doll", ""]
    k = content_keys(titles).astype(np.float32) - 127.5
    x = enc.encode_texts(titles)
    np.testing.assert_allclose(x, k[:, :8] / np.linalg.norm(k[:, :8], axis=1, keepdims=True), rtol=1e-6)
    assert np.array_equal(x[0], x[1]) and not np.allclose(x[0], x[2])
    v32 = np.concatenate([k, k[:, ::-1]], axis=1)
    x32 = sk.encoders.load("hash-text").encode_texts(titles)                # 32-d by default
    np.testing.assert_allclose(x32, v32 / np.linalg.norm(v32, axis=1, keepdims=True), rtol=1e-6)
    x70 = sk.encoders.HashingTextEncoder(70).encode_texts(titles)           # tiled, cut to the width
    assert x70.shape == (4, 70) and np.allclose(np.linalg.norm(x70, axis=1), 1)
    np.testing.assert_allclose(x70[:, 32:64] / x70[:, :32], np.ones((4, 32)), rtol=1e-5)
    for bad in ("hash-text:0", "hash-text:-3"):
        with pytest.raises(ValueError, match="dim must be an integer >= 1"):
            sk.encoders.load(bad)
    with pytest.raises(ValueError, match="must be an integer, got 'wide'"):
        sk.encoders.load("hash-text:wide")
