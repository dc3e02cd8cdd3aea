"""encode_catalog, its cache, safe image loading on every bad-image case, and the Embeddings table."""
from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import semcat_kit as sk
from semcat_kit.encode.store import VectorStore, content_key
from semcat_kit.datasets.images import ImageError, load_image


@pytest.fixture(scope="module")
def img_enc():
    return sk.encoders.load("efficientnet-lite0@64")  # real weights, small input: fast tests


@pytest.fixture(scope="module")
def txt_enc():
    return sk.encoders.load("minilm")


@pytest.fixture(scope="module")
def real_catalog(myntra_styles, fashion_dir):
    df = myntra_styles.dropna(subset=["productDisplayName"]).iloc[:12]
    return pd.DataFrame({
        "item_id": df["id"].astype(str).to_numpy(),
        "title": df["productDisplayName"].to_numpy(),
        "image_path": [str(fashion_dir / "images" / f"{i}.jpg") for i in df["id"]],
        "label": df["articleType"].to_numpy(),
    })


# ------------------------------------------------------------------------- bad image files
def _bomb_png(path, side=10_000):
    """A real, valid 1-bit PNG of side x side pixels (100 MP) that is only a few kB on disk."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row * 500) for _ in range(side // 500)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory, fashion_dir):
    d = tmp_path_factory.mktemp("bad_images")
    real = fashion_dir / "images" / "15970.jpg"
    photo = Image.open(real).convert("RGB")
    files = {}
    files["missing"] = d / "missing.jpg"
    (d / "empty.jpg").write_bytes(b"")
    files["empty"] = d / "empty.jpg"
    data = real.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    files["truncated"] = d / "truncated.jpg"
    (d / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    files["garbage"] = d / "garbage.jpg"
    photo.convert("L").save(d / "grey.jpg", quality=95)
    files["grey"] = d / "grey.jpg"
    grey16 = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257))
    grey16.save(d / "grey16.png")
    files["grey16"] = d / "grey16.png"
    pal = Image.new("P", (60, 80), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (20, 30, 40, 50))
    pal.save(d / "palette.png", transparency=0)
    files["palette"] = d / "palette.png"
    rgba = Image.new("RGBA", (60, 80), (0, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (20, 30, 40, 50))
    rgba.save(d / "rgba.png")
    files["rgba"] = d / "rgba.png"
    Image.new("CMYK", (60, 80), (0, 255, 255, 0)).save(d / "cmyk.jpg", quality=95)
    files["cmyk"] = d / "cmyk.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    photo.transpose(Image.Transpose.ROTATE_90).save(d / "exif_rotated.jpg", exif=exif.tobytes(), quality=95)
    files["exif_rotated"] = d / "exif_rotated.jpg"
    photo.transpose(Image.Transpose.ROTATE_90).save(d / "stored_sideways.png")
    files["sideways"] = d / "stored_sideways.png"
    photo.save(d / "upright.png")
    files["upright"] = d / "upright.png"
    _bomb_png(d / "bomb.png")
    files["bomb"] = d / "bomb.png"
    return files


@pytest.mark.parametrize("case,reason", [
    ("missing", "missing file"), ("empty", "empty file"), ("truncated", "truncated"),
    ("garbage", "not a recognised image"), ("bomb", "decompression bomb"),
])
def test_load_image_rejects_unusable_files(bad_images, case, reason):
    with pytest.raises(ImageError, match=reason) as ei:
        load_image(bad_images[case])
    assert str(bad_images[case]) in str(ei.value)  # the error names the file


def test_bomb_file_is_small_but_refused_before_decoding(bad_images):
    assert bad_images["bomb"].stat().st_size < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(bad_images["bomb"]) as im:
            assert im.size == (10_000, 10_000)  # a genuine 100-megapixel image
    img = load_image(Image.new("RGB", (100, 100)), max_pixels=20_000)  # PIL input under the limit works
    assert img.size == (100, 100)
    with pytest.raises(ImageError, match="max_pixels=5,000"):
        load_image(Image.new("RGB", (100, 100)), max_pixels=5_000)


def test_load_image_converts_modes(bad_images):
    grey = load_image(bad_images["grey"])
    a = np.asarray(grey)
    assert grey.mode == "RGB" and np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    g16 = np.asarray(load_image(bad_images["grey16"]))
    assert g16.max() > 200 and g16.min() < 100  # scaled into 8 bits, not clipped to white
    pal = np.asarray(load_image(bad_images["palette"]))
    assert tuple(pal[0, 0]) == (255, 255, 255) and tuple(pal[40, 30]) == (255, 0, 0)  # transparent -> white
    rgba = np.asarray(load_image(bad_images["rgba"]))
    assert tuple(rgba[0, 0]) == (255, 255, 255) and tuple(rgba[40, 30]) == (0, 0, 255)
    cmyk = np.asarray(load_image(bad_images["cmyk"])).reshape(-1, 3).mean(0)
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60  # C=0 M=Y=100% -> red


def test_load_image_applies_exif_orientation(bad_images):
    raw = Image.open(bad_images["exif_rotated"])
    assert raw.size == (80, 60)  # stored sideways
    img = load_image(bad_images["exif_rotated"])
    upright = np.asarray(Image.open(bad_images["upright"]).convert("RGB"), dtype=np.float32)
    assert img.size == (60, 80)
    assert np.abs(np.asarray(img, dtype=np.float32) - upright).mean() < 6  # only JPEG noise left


def test_encode_catalog_reports_every_bad_image_and_keeps_going(bad_images, img_enc, real_catalog):
    names = list(bad_images)
    cat = pd.DataFrame({"item_id": [f"bad-{n}" for n in names], "title": names,
                        "image_path": [str(bad_images[n]) for n in names]})
    cat = pd.concat([cat, pd.DataFrame({"item_id": ["no-path"], "title": ["x"], "image_path": [None]}),
                     real_catalog.iloc[:3]], ignore_index=True)
    emb = sk.encode_catalog(cat, image_encoder=img_enc, progress=False)
    ok = dict(zip(emb.item_ids, emb.image_mask))
    bad = {"missing", "empty", "truncated", "garbage", "bomb"}
    for n in names:
        assert ok[f"bad-{n}"] == (n not in bad), n
    assert not ok["no-path"] and all(ok[i] for i in real_catalog["item_id"][:3])
    assert np.all(emb.image[~emb.image_mask] == 0)
    np.testing.assert_allclose(np.linalg.norm(emb.image[emb.image_mask], axis=1), 1, atol=1e-5)
    f = emb.failures.set_index("item_id")
    assert set(f.index) == {f"bad-{n}" for n in bad} | {"no-path"}
    assert (f["modality"] == "image").all()
    assert f.loc["bad-missing", "reason"] == f"image file missing: {bad_images['missing']}"   # the one wording
    assert f.loc["no-path", "reason"] == "no image path"
    for n, reason in [("missing", "image file missing"), ("empty", "empty file"), ("truncated", "truncated"),
                      ("garbage", "not a recognised"), ("bomb", "decompression bomb")]:
        assert reason in f.loc[f"bad-{n}", "reason"] and str(bad_images[n]) in f.loc[f"bad-{n}", "reason"]
    # EXIF-rotated photo embeds like the upright one, not like the sideways pixels
    v = dict(zip(emb.item_ids, emb.image))
    assert v["bad-exif_rotated"] @ v["bad-upright"] > 0.95
    assert v["bad-exif_rotated"] @ v["bad-upright"] > v["bad-exif_rotated"] @ v["bad-sideways"] + 0.02
    # catalog vectors equal the encoder's own output
    direct = img_enc.encode_images(cat["image_path"].iloc[-3:].tolist())
    np.testing.assert_allclose(emb.image[-3:], direct, atol=1e-5)


def test_empty_and_missing_titles_are_masked_and_reported(txt_enc):
    cat = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "title": ["Blue shirt", "", None, "   "]})
    emb = sk.encode_catalog(cat, text_encoder=txt_enc, progress=False)
    assert emb.text_mask.tolist() == [True, False, False, False]
    assert emb.image is None and not emb.image_mask.any()
    assert np.all(emb.text[1:] == 0)
    assert dict(zip(emb.failures["item_id"], emb.failures["reason"])) == {
        "b": "empty title", "c": "missing title", "d": "empty title"}
    np.testing.assert_allclose(emb.text[0], txt_enc.encode_texts(["Blue shirt"])[0], atol=1e-5)


# ------------------------------------------------------------------------------------ cache
def _shards(cache_dir, modality):
    return sorted(cache_dir.glob(f"*/{modality}/shard-*.arrow"))


def test_cache_hit_partial_hit_and_encoder_change(tmp_path, real_catalog, txt_enc, img_enc):
    cache = tmp_path / "cache"
    first = real_catalog.iloc[:8]
    e1 = sk.encode_catalog(first, txt_enc, img_enc, cache_dir=cache, progress=False)
    assert e1.meta["stats"]["image_encoded"] == 8 and e1.meta["stats"]["text_encoded"] == 8
    # full hit: nothing encoded, identical vectors
    e2 = sk.encode_catalog(first, txt_enc, img_enc, cache_dir=cache, progress=False)
    assert e2.meta["stats"]["image_encoded"] == 0 and e2.meta["stats"]["text_encoded"] == 0
    np.testing.assert_array_equal(e1.image, e2.image)
    np.testing.assert_array_equal(e1.text, e2.text)
    # partial hit: 4 new products -> exactly 4 encoded; result equals an uncached run
    e3 = sk.encode_catalog(real_catalog, txt_enc, img_enc, cache_dir=cache, progress=False)
    assert e3.meta["stats"]["image_encoded"] == 4 and e3.meta["stats"]["text_encoded"] == 4
    fresh = sk.encode_catalog(real_catalog, txt_enc, img_enc, cache_dir=None, progress=False)
    np.testing.assert_allclose(e3.image, fresh.image, atol=1e-5)
    np.testing.assert_allclose(e3.text, fresh.text, atol=1e-5)
    # another encoder (other resolution) never sees these vectors
    other = sk.encoders.load("efficientnet-lite0@96")
    e4 = sk.encode_catalog(real_catalog, image_encoder=other, cache_dir=cache, progress=False)
    assert e4.meta["stats"]["image_encoded"] == len(real_catalog)
    assert e4.meta["image_encoder"]["fingerprint"] == other.fingerprint
    assert not np.allclose(e4.image, e3.image, atol=1e-2)
    np.testing.assert_allclose(e4.image[:2], other.encode_images(real_catalog["image_path"][:2].tolist()), atol=1e-5)


def test_cache_is_content_addressed(tmp_path, real_catalog, txt_enc):
    cat = real_catalog.iloc[:4].copy()
    sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path, progress=False)
    cat.loc[0, "title"] = cat.loc[0, "title"] + " (new season)"  # edited title -> re-encoded
    cat["item_id"] = cat["item_id"] + "-renamed"                 # renamed ids, same text -> cache hit
    e = sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path, progress=False)
    assert e.meta["stats"]["text_encoded"] == 1
    np.testing.assert_allclose(e.text[0], txt_enc.encode_texts([cat.loc[0, "title"]])[0], atol=1e-5)
    # duplicated titles are encoded once
    dup = pd.DataFrame({"item_id": ["x", "y"], "title": ["Same title here", "Same title here"]})
    e = sk.encode_catalog(dup, text_encoder=txt_enc, cache_dir=tmp_path, progress=False)
    assert e.meta["stats"]["text_encoded"] == 1 and np.array_equal(e.text[0], e.text[1])


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "silent"])
def test_corrupt_cache_shard_is_detected_and_recomputed(tmp_path, real_catalog, img_enc, damage):
    cat = real_catalog.iloc[:4]
    ref = sk.encode_catalog(cat, image_encoder=img_enc, cache_dir=tmp_path, progress=False)
    (shard,) = _shards(tmp_path, "image")
    raw = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "bitflip":
        raw[len(raw) // 2] ^= 0xFF
        shard.write_bytes(bytes(raw))
    else:  # a well-formed Arrow file whose vectors no longer match the manifest's checksum
        import pyarrow as pa

        with pa.memory_map(str(shard)) as mm:
            t = pa.ipc.open_file(mm).read_all()
        vecs = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
        vecs[0] *= -1
        t2 = pa.table({"key": t.column("key"),
                       "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])},
                      schema=t.schema)
        with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t2)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        e = sk.encode_catalog(cat, image_encoder=img_enc, cache_dir=tmp_path, progress=False)
    assert e.meta["stats"]["image_encoded"] == 4 and e.meta["stats"]["image_cache_corrupt"] == [str(shard)]
    np.testing.assert_allclose(e.image, ref.image, atol=1e-5)
    assert shard.with_suffix(".corrupt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = sk.encode_catalog(cat, image_encoder=img_enc, cache_dir=tmp_path, progress=False)
    assert again.meta["stats"]["image_encoded"] == 0


def test_interrupted_run_keeps_what_it_computed(tmp_path, real_catalog, txt_enc, monkeypatch):
    calls = []
    real = txt_enc.encode_texts

    def flaky(texts, batch_size=64, progress=False):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the notebook cell mid-run
        return real(texts, batch_size=batch_size)

    cat = real_catalog.iloc[:10]
    monkeypatch.setattr(txt_enc, "encode_texts", flaky)
    with pytest.raises(KeyboardInterrupt):
        sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path, batch_size=4, progress=False)
    monkeypatch.undo()
    e = sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path, batch_size=4, progress=False)
    assert e.meta["stats"]["text_encoded"] == 2  # the first two batches of 4 were saved
    np.testing.assert_allclose(e.text, txt_enc.encode_texts(cat["title"].tolist()), atol=1e-5)


def test_home_relative_cache_and_embeddings_paths(tmp_path, real_catalog, txt_enc, monkeypatch):
    # "~/..." means the home folder (as in load_catalog), not a folder literally named "~" in the cwd
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    e = sk.encode_catalog(real_catalog.iloc[:2], text_encoder=txt_enc, cache_dir="~/semcat-cache", progress=False)
    assert _shards(tmp_path / "home" / "semcat-cache", "text")
    e.save("~/emb.npz")
    assert (tmp_path / "home" / "emb.npz").is_file()
    assert sk.Embeddings.load("~/emb.npz").item_ids.tolist() == e.item_ids.tolist()
    assert list((tmp_path / "cwd").iterdir()) == []


def test_vector_store_merging_and_key_edge_cases(tmp_path):
    rng = np.random.default_rng(0)
    c = VectorStore.for_encoder(tmp_path, "fp-test", "text", dim=4, merge_factor=3, base_rows=1)
    keys = [content_key(f"t{i}") for i in range(10)]
    keys.append(b"\x01" * 15 + b"\x00")  # a digest ending in NUL must round-trip
    vecs = rng.normal(size=(len(keys), 4)).astype(np.float32)
    for k, v in zip(keys, vecs):
        c.put([k], v[None])
        c.flush()
    assert len(list(c.root.glob("shard-*.arrow"))) <= 4  # tiers of 3: merged, never one shard per flush
    found, got = VectorStore.for_encoder(tmp_path, "fp-test", "text", dim=4).get(keys + [content_key("absent")])
    assert found.tolist() == [True] * len(keys) + [False]
    np.testing.assert_array_equal(got[:-1], vecs)
    assert not VectorStore.for_encoder(tmp_path, "fp-other", "text", dim=4).get(keys)[0].any()
    with pytest.raises(ValueError, match="do not match"):
        c.put(keys[:2], vecs[:3])
    # a truncated shard is moved aside without leaking its file handle
    import gc

    c = None
    gc.collect()
    root = next(tmp_path.glob("*/text"))
    for shard in root.glob("shard-*.arrow"):
        shard.write_bytes(shard.read_bytes()[:100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not VectorStore.for_encoder(tmp_path, "fp-test", "text", dim=4).get(keys)[0].any()
        gc.collect()
    kinds = [w.category for w in caught]
    assert RuntimeWarning in kinds and ResourceWarning not in kinds, [str(w.message) for w in caught]


def test_dataloader_workers_match_inline(real_catalog, img_enc):
    cat = real_catalog.iloc[:8]
    a = sk.encode_catalog(cat, image_encoder=img_enc, num_workers=0, batch_size=3, progress=False)
    b = sk.encode_catalog(cat, image_encoder=img_enc, num_workers=2, batch_size=3, progress=False)
    np.testing.assert_allclose(a.image, b.image, atol=1e-6)


def test_catalog_validation(real_catalog, txt_enc, img_enc):
    with pytest.raises(ValueError, match="text_encoder and/or image_encoder"):
        sk.encode_catalog(real_catalog)
    with pytest.raises(KeyError, match="image_path"):
        sk.encode_catalog(real_catalog.drop(columns="image_path"), image_encoder=img_enc)
    dup = pd.concat([real_catalog.iloc[:3], real_catalog.iloc[:1]])
    with pytest.raises(ValueError, match=str(real_catalog["item_id"].iloc[0])):
        sk.encode_catalog(dup, text_encoder=txt_enc)
    with pytest.raises(ValueError, match="cannot encode text"):
        sk.encode_catalog(real_catalog, text_encoder=img_enc)
    with pytest.raises(TypeError, match="DataFrame"):
        sk.encode_catalog(real_catalog.to_dict(), text_encoder=txt_enc)


# ------------------------------------------------------------------------------ Embeddings
def _toy(n=5, dt=3, di=4):
    rng = np.random.default_rng(1)
    fails = pd.DataFrame({"item_id": ["i1", "i3"], "modality": ["image", "text"], "reason": ["missing file", "empty"]})
    img_mask = np.array([True, False, True, True, True][:n])
    txt_mask = np.array([True, True, True, False, True][:n])
    return sk.Embeddings(np.array([f"i{k}" for k in range(n)]), rng.normal(size=(n, dt)).astype(np.float32),
                         rng.normal(size=(n, di)).astype(np.float32), txt_mask, img_mask, fails,
                         {"text_encoder": {"name": "t", "fingerprint": "ft", "dim": dt},
                          "image_encoder": {"name": "i", "fingerprint": "fi", "dim": di}})


def test_embeddings_save_load_roundtrip(tmp_path):
    e = _toy()
    p = e.save(tmp_path / "emb.npz")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["emb.npz"]  # no temp files left behind
    back = sk.Embeddings.load(p)
    assert back.item_ids.tolist() == e.item_ids.tolist() and len(back) == 5
    np.testing.assert_array_equal(back.text, e.text)
    np.testing.assert_array_equal(back.image, e.image)
    np.testing.assert_array_equal(back.image_mask, e.image_mask)
    pd.testing.assert_frame_equal(back.failures, e.failures)
    assert back.meta == e.meta
    text_only = sk.Embeddings(e.item_ids, e.text, None, e.text_mask, np.zeros(5, bool))
    back = sk.Embeddings.load(text_only.save(tmp_path / "t.npz"))
    assert back.image is None and len(back.failures) == 0


def test_atomic_writes_get_normal_permissions(tmp_path, real_catalog, txt_enc):
    # the temp file/dir behind an atomic write is 0600/0700; the final one must follow the umask
    # (an exported head or a shared cache must be readable by the other users a plain write allows)
    import os
    import stat

    # internal: the folder form of the atomic write (no public call writes a bare folder)
    from semcat_kit._core.io import atomic_dir

    old = os.umask(0o022)
    try:
        p = _toy().save(tmp_path / "emb.npz")
        sk.encode_catalog(real_catalog.iloc[:2], text_encoder=txt_enc, cache_dir=tmp_path / "c", progress=False)
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
        os.umask(0o027)
        q = _toy().save(tmp_path / "emb2.npz")
    finally:
        os.umask(old)

    def mode(x):
        return stat.S_IMODE(x.stat().st_mode)

    assert mode(p) == 0o644 and mode(q) == 0o640
    (shard,) = _shards(tmp_path / "c", "text")
    assert mode(shard) == 0o644
    assert mode(tmp_path / "d") == 0o755


def test_embeddings_load_refuses_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        sk.Embeddings.load(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        sk.Embeddings.load(tmp_path / "junk.npz")
    import gc

    good = _toy().save(tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])  # zip magic, no central directory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="cut.npz is not a readable"):
            sk.Embeddings.load(tmp_path / "cut.npz")
        gc.collect()
    assert not [w for w in caught if w.category is ResourceWarning]  # no leaked file handle
    e = _toy()
    p = e.save(tmp_path / "e.npz")
    with np.load(p) as z:
        arrays = dict(z)
    arrays["format_version"] = np.array(99)
    with open(tmp_path / "future.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="format 99"):
        sk.Embeddings.load(tmp_path / "future.npz")
    # a bit flipped inside a stored array (zip CRC mismatch) or a missing array: one clear error naming the file
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"flip.npz is a damaged embeddings file"):
        sk.Embeddings.load(tmp_path / "flip.npz")
    del arrays["text_mask"]
    arrays["format_version"] = np.array(1)
    with open(tmp_path / "partial.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"partial.npz is a damaged embeddings file.*text_mask"):
        sk.Embeddings.load(tmp_path / "partial.npz")


def test_embeddings_take_and_align():
    e = _toy()
    t = e.take([3, 1])
    assert t.item_ids.tolist() == ["i3", "i1"] and t.text_mask.tolist() == [False, True]
    np.testing.assert_array_equal(t.image, e.image[[3, 1]])
    assert sorted(t.failures["item_id"]) == ["i1", "i3"]
    assert e.take(e.image_mask).item_ids.tolist() == ["i0", "i2", "i3", "i4"]
    assert e.take(slice(0, 2)).failures["item_id"].tolist() == ["i1"]
    a = e.align(pd.DataFrame({"item_id": ["i4", "i0", "i2"]}))
    assert a.item_ids.tolist() == ["i4", "i0", "i2"]
    np.testing.assert_array_equal(a.text, e.text[[4, 0, 2]])
    with pytest.raises(KeyError, match="zz"):
        e.align(["i0", "zz"])
    with pytest.raises(TypeError, match="align"):
        e.take(np.array(["i0"]))
    with pytest.raises(IndexError):
        e.take([7])


def test_embeddings_validation():
    with pytest.raises(ValueError, match="text must be"):
        sk.Embeddings(np.array(["a", "b"]), np.zeros((3, 2)), None, np.ones(2, bool), np.zeros(2, bool))
    with pytest.raises(ValueError, match="image is None"):
        sk.Embeddings(np.array(["a"]), None, None, np.zeros(1, bool), np.ones(1, bool))


def test_encode_catalog_view_on_the_store(tmp_path, real_catalog, txt_enc, img_enc):
    """view=True: text/image are StoreRows views (no (N, d) array); same vectors as the dense path;
    take() stays a view; save/load, training tables and re-runs work from it."""
    from semcat_kit import contracts
    from semcat_kit.encode.store import StoreRows

    cat = real_catalog.copy()
    cat.loc[2, "title"] = ""                                     # a failure stays masked and reported
    dense = sk.encode_catalog(cat, txt_enc, img_enc, cache_dir=tmp_path / "c", progress=False)
    assert not isinstance(dense.text, StoreRows)                 # small sets: in memory by default
    v = sk.encode_catalog(cat, txt_enc, img_enc, cache_dir=tmp_path / "c", progress=False, view=True)
    assert isinstance(v.text, StoreRows) and isinstance(v.image, StoreRows) and v.meta["stats"]["view"]
    assert v.meta["stats"]["text_encoded"] == 0 and v.meta["stats"]["image_encoded"] == 0
    np.testing.assert_array_equal(np.asarray(v.text), dense.text)
    np.testing.assert_array_equal(np.asarray(v.image), dense.image)
    np.testing.assert_array_equal(v.text_mask, dense.text_mask)
    assert not v.text_mask[2] and (v.failures["item_id"] == cat.loc[2, "item_id"]).any()
    sub = v.take([5, 1, 0])
    assert isinstance(sub.text, StoreRows)
    np.testing.assert_array_equal(np.asarray(sub.image), dense.image[[5, 1, 0]])
    assert isinstance(v.take(slice(0, 3)).text, StoreRows)
    # training / prediction tables read it lazily, batch by batch
    t = contracts.as_embedding_table(v)
    assert getattr(t, "lazy", False)
    xt, xi, im, tm = t.batch(np.array([3, 0, 7]), "cpu")
    np.testing.assert_array_equal(xt.numpy(), dense.text[[3, 0, 7]])
    np.testing.assert_array_equal(xi.numpy(), dense.image[[3, 0, 7]])
    # save materialises block by block; the folder loads back memory-mapped
    out = v.save(tmp_path / "emb")
    back = sk.Embeddings.load(out)
    np.testing.assert_array_equal(back.image, dense.image)
    v.save(tmp_path / "e.npz")
    np.testing.assert_array_equal(sk.Embeddings.load(tmp_path / "e.npz").text, dense.text)
    # a fresh store (no cache yet) gives the same view
    fresh = sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path / "c2", progress=False, view=True)
    assert fresh.meta["stats"]["text_encoded"] == int(dense.text_mask.sum())
    np.testing.assert_allclose(np.asarray(fresh.text), dense.text, atol=1e-6)
    with pytest.raises(ValueError, match="cache_dir"):
        sk.encode_catalog(cat, text_encoder=txt_enc, view=True)
    with pytest.raises(ValueError, match="not both"):
        sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path / "c", out=tmp_path / "o", view=True)


def test_take_keeps_the_failures_of_its_rows_by_hashes_even_when_hashes_collide(monkeypatch):
    """take() selects the failures of the rows it keeps by 64-bit id hashes (no Python set of every
    id); a shared hash is resolved by comparing the ids themselves."""
    import semcat_kit.encode.embeddings as E

    e = _toy()
    want = sorted(e.take([3, 1]).failures["item_id"])
    monkeypatch.setattr(E, "id_hashes", lambda a: np.zeros(len(a), np.uint64))   # every id collides
    assert sorted(e.take([3, 1]).failures["item_id"]) == want == ["i1", "i3"]
    assert e.take([0, 2]).failures.empty or set(e.take([0, 2]).failures["item_id"]) <= {"i0", "i2"}
    ids = np.array([f"p{i}" for i in range(1000)])
    # private: the exact comparison behind take() over 1,000 ids that all collide (the toy has 4 rows)
    got = E._ids_in(np.array(["p5", "q5", "p999", "p1000"]), ids)
    assert got.tolist() == [True, False, True, False]
