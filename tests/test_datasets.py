"""Tests for semcat_kit.datasets: catalog loaders, the bundled tutorial catalog, the Google taxonomy."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import semcat_kit as sk
from semcat_kit import datasets as D

ROOT = Path(__file__).resolve().parents[1]
LEVELS = list(D.FASHION_PATH_COLUMNS)


def _script():
    spec = importlib.util.spec_from_file_location("make_tutorial_subset", ROOT / "scripts" / "make_tutorial_subset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fashion(fashion_dir):
    return D.load_fashion(fashion_dir)


@pytest.fixture(scope="module")
def tutorial():
    return D.load_fashion_tutorial()


def _report_ids(df, column):
    rep = df.attrs["report"]
    return set(rep.loc[rep["column"] == column, "item_id"])


# ------------------------------------------------------------------------------ real fashion catalog
def test_load_fashion_real_columns_and_labels(fashion, myntra_styles):
    assert len(fashion) == 44446 == len(myntra_styles)
    assert list(fashion.columns[:4]) == ["item_id", "title", "image_path", "label"]
    for c in ["level_1", "level_2", "level_3", "gender", "baseColour", "season", "year", "usage", *LEVELS]:
        assert c in fashion.columns
    assert all(isinstance(x, str) for x in fashion["item_id"])
    assert fashion["item_id"].tolist() == myntra_styles["id"].astype(str).tolist()
    expected = (myntra_styles["masterCategory"] + " > " + myntra_styles["subCategory"] + " > "
                + myntra_styles["articleType"])
    assert fashion["label"].tolist() == expected.tolist()
    assert fashion["label"].nunique() == 170
    assert fashion["level_1"].nunique() == 7
    assert (fashion["level_3"] == myntra_styles["articleType"]).all()
    row = fashion.set_index("item_id").loc["15970"]
    assert row["title"] == "Turtle Check Men Navy Blue Shirt"
    assert row["label"] == "Apparel > Topwear > Shirts"


def test_load_fashion_real_report_lists_missing_titles_and_images(fashion, fashion_dir, myntra_styles):
    no_title = set(myntra_styles.loc[myntra_styles["productDisplayName"].isna(), "id"].astype(str))
    on_disk = {p.stem for p in (fashion_dir / "images").iterdir()}
    no_image = set(myntra_styles["id"].astype(str)) - on_disk
    assert len(no_title) == 7 and len(no_image) == 5
    assert _report_ids(fashion, "title") == no_title
    assert _report_ids(fashion, "image_path") == no_image
    assert len(fashion.attrs["report"]) == 12
    # kept, not dropped: empty title "" and image_path None
    idx = fashion.set_index("item_id")
    assert (idx.loc[sorted(no_title), "title"] == "").all()
    assert idx.loc[sorted(no_image), "image_path"].isna().all()
    has = fashion["image_path"].notna()
    assert has.sum() == 44441
    sample = fashion.loc[has, "image_path"].iloc[::997]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in sample)


def test_report_survives_concat_and_merge(fashion):
    parts = [fashion.iloc[:100], fashion.iloc[100:]]
    both = pd.concat(parts)
    assert len(both) == len(fashion)
    assert len(both.attrs["report"]) == 12
    merged = fashion.head(50).merge(fashion[["item_id"]].head(50).assign(z=1), on="item_id")
    assert len(merged) == 50
    rep = fashion.attrs["report"]
    assert isinstance(rep, pd.DataFrame) and list(rep.columns) == ["item_id", "column", "problem"]
    assert (rep == rep.copy()) is True


def _write_styles(path: Path, styles: pd.DataFrame, broken: dict[int, str] | None = None) -> list[str]:
    """Write rows as the Kaggle file does: no quoting, so commas in titles break lines."""
    lines = [",".join(styles.columns)]
    for k, row in enumerate(styles.astype(str).itertuples(index=False)):
        vals = list(row)
        if broken and k in broken:
            vals[-1] = broken[k]
        lines.append(",".join(v if v != "nan" else "" for v in vals))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def test_load_fashion_repairs_malformed_kaggle_lines(tmp_path, myntra_styles, fashion_dir):
    styles = myntra_styles.head(30).copy()
    broken = {3: "Lucera Women Silver, Gold Earrings", 17: "Puma Men, Black, Shoe"}
    _write_styles(tmp_path / "styles.csv", styles, broken)
    (tmp_path / "images").mkdir()
    for i in styles["id"].head(5):
        (tmp_path / "images" / f"{i}.jpg").write_bytes((fashion_dir / "images" / f"{i}.jpg").read_bytes())
    with pytest.warns(UserWarning, match="repaired 2 malformed"):
        df = D.load_fashion(tmp_path)
    assert len(df) == 30
    assert df["title"].iloc[3] == "Lucera Women Silver, Gold Earrings"
    assert df["title"].iloc[17] == "Puma Men, Black, Shoe"
    assert df["usage"].iloc[3] == styles["usage"].iloc[3]  # the fields before the title are intact
    rep = df.attrs["report"]
    rep_t = rep[(rep["column"] == "title") & rep["problem"].str.contains("malformed")]
    assert len(rep[rep["column"] == "title"]) == 2 + styles["productDisplayName"].isna().sum()
    assert set(rep_t["item_id"]) == {str(styles["id"].iloc[3]), str(styles["id"].iloc[17])}
    assert rep_t["problem"].str.contains("malformed CSV line").all()
    assert _report_ids(df, "image_path") == set(styles["id"].iloc[5:].astype(str))


def test_unrepairable_line_raises_naming_content(tmp_path):
    (tmp_path / "c.csv").write_text("id,title,cat\n1,a,X\n2,b,Y,extra\n", encoding="utf-8")
    # title is not the last column, but the extra field is still joined into it: visible in the report
    with pytest.warns(UserWarning):
        df = D.load_catalog(tmp_path / "c.csv", path_col="cat")
    assert df["title"].tolist() == ["a", "b,Y"] and df["label"].tolist() == ["X", "extra"]
    (tmp_path / "d.csv").write_text("id,name,cat\n1,a,X\n2,b,Y,extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"1 line\(s\) have more fields.*2,b,Y,extra"):
        D.load_catalog(tmp_path / "d.csv", path_col="cat")


def test_malformed_first_data_line_is_repaired_not_shifted_into_the_index(tmp_path):
    # pandas would take the first column of such a file as the index and shift every column left
    (tmp_path / "c.csv").write_text("id,title,cat,price\n17,Mug, large,A > B,5\n18,ok,A > C,6\n",
                                    encoding="utf-8")
    with pytest.warns(UserWarning, match="repaired 1 malformed"):
        df = D.load_catalog(tmp_path / "c.csv", path_col="cat")
    assert df["item_id"].tolist() == ["17", "18"] and df["title"].tolist() == ["Mug, large", "ok"]
    assert df["label"].tolist() == ["A > B", "A > C"] and df["price"].tolist() == [5, 6]
    rep = df.attrs["report"]
    assert rep["item_id"].tolist() == ["17"] and "malformed CSV line" in rep["problem"].iloc[0]
    # with a UTF-8 byte-order mark (Excel's "CSV UTF-8") the repaired line still names its item
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "c.csv").read_bytes())
    with pytest.warns(UserWarning, match=r"items \['17'\]"):
        df2 = D.load_catalog(tmp_path / "bom.csv", path_col="cat")
    assert df2.equals(df)
    # trailing commas (one empty field too many on every data line) are dropped, not joined into the title
    (tmp_path / "t.csv").write_text("id,title,cat\n1,Mug,A > B,\n2,\"Cup, tall\",A > C,,\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df3 = D.load_catalog(tmp_path / "t.csv", path_col="cat")
    assert df3["title"].tolist() == ["Mug", "Cup, tall"] and df3["label"].tolist() == ["A > B", "A > C"]
    assert len(df3.attrs["report"]) == 0


def test_non_utf8_csv_error_names_file_and_fix(tmp_path):
    for name, body in [("early.csv", "id,title,cat\n1,Café,A > B\n"),
                       ("late.csv", "id,title,cat\n" + "1,a,A > B\n" * 3 + "9,Café,A > B\n")]:
        (tmp_path / name).write_bytes(body.encode("latin-1"))
        with pytest.raises(ValueError, match=rf"{name}' is not UTF-8 text .*save it as UTF-8"):
            D.load_catalog(tmp_path / name, path_col="cat")


def test_load_fashion_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_fashion(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="styles.csv"):
        D.load_fashion(tmp_path)


def test_load_fashion_without_images_folder_reports_every_item(tmp_path, myntra_styles):
    _write_styles(tmp_path / "styles.csv", myntra_styles.head(8))
    df = D.load_fashion(tmp_path)
    assert df["image_path"].isna().all()
    assert _report_ids(df, "image_path") == set(myntra_styles["id"].head(8).astype(str))


# ------------------------------------------------------------------------------ generic load_catalog
def _small():
    return pd.DataFrame({
        "sku": ["a1", "a2", "a3", "a4"],
        "name": ["Red shirt", None, "  Blue jeans ", "Mug"],
        "cat": ["Apparel > Topwear > Shirts", "Apparel > Topwear > Shirts", "Apparel > Bottomwear > Jeans",
                "Home > Mugs"],
        "price": [10.0, 12.0, 30.0, 5.0],
    })


def test_load_catalog_dataframe_path_col_variable_depth():
    df = D.load_catalog(_small(), id="sku", title="name", path_col="cat")
    assert list(df.columns) == ["item_id", "title", "image_path", "label", "level_1", "level_2", "level_3", "price"]
    assert df["title"].tolist() == ["Red shirt", "", "Blue jeans", "Mug"]
    assert df["level_3"].tolist()[:3] == ["Shirts", "Shirts", "Jeans"] and df["level_3"].iloc[3] is None
    assert df["level_2"].iloc[3] == "Mugs"
    assert df["image_path"].isna().all()
    assert df["price"].tolist() == [10.0, 12.0, 30.0, 5.0]
    rep = df.attrs["report"]
    assert rep.to_dict("records") == [{"item_id": "a2", "column": "title", "problem": "empty title (kept as '')"}]


def test_load_catalog_path_columns_and_custom_sep():
    src = pd.DataFrame({"id": [1, 2], "title": ["x", "y"], "l1": ["A", "B"], "l2": ["a", "b"]})
    df = D.load_catalog(src, path=["l1", "l2"], sep=" / ")
    assert df["label"].tolist() == ["A / a", "B / b"]
    assert df["item_id"].tolist() == ["1", "2"]
    assert {"l1", "l2"} <= set(df.columns)  # the level columns of the source are kept
    tax = sk.Taxonomy.from_paths(df["label"], sep=" / ")
    assert tax.n_classes == 2


def test_load_catalog_csv_keeps_id_text_and_unicode(tmp_path):
    (tmp_path / "c.csv").write_text("id,title,cat\n007,Café crème,Küche > Tassen\n010,\"Mug, large\",Küche > Tassen\n",
                                    encoding="utf-8")
    df = D.load_catalog(tmp_path / "c.csv", path_col="cat")
    assert df["item_id"].tolist() == ["007", "010"]
    assert df["title"].tolist() == ["Café crème", "Mug, large"]
    assert df["level_1"].tolist() == ["Küche", "Küche"]
    assert len(df.attrs["report"]) == 0


def test_images_found_by_id_with_extension_priority(tmp_path):
    img = tmp_path / "imgs"
    img.mkdir()
    for name in ["a1.png", "a1.jpg", "a2.webp", "a3.JPEG", "a3.txt", "zz.jpg"]:
        (img / name).write_bytes(b"x")
    df = D.load_catalog(_small(), images_dir=img, id="sku", title="name", path_col="cat")
    assert df["image_path"].tolist()[:3] == [str((img / "a1.jpg").resolve()), str((img / "a2.webp").resolve()),
                                             str((img / "a3.JPEG").resolve())]
    assert df["image_path"].iloc[3] is None
    rep = df.attrs["report"]
    miss = rep[rep["column"] == "image_path"]
    assert miss["item_id"].tolist() == ["a4"] and "a4.<jpg|jpeg|png|webp>" in miss["problem"].iloc[0]


def _listed(images_dir) -> dict:
    """What load_catalog(images_dir=) found before image_paths_for (the whole folder listed into a
    dict): stem -> (path, is_file); the reference for the per-id lookup."""
    import os

    rank = {e: k for k, e in enumerate(D.IMAGE_EXTENSIONS)}
    best = {}
    with os.scandir(images_dir) as it:
        for entry in it:
            stem, dot, ext = entry.name.rpartition(".")
            r = rank.get(ext.lower())
            if not dot or r is None:
                continue
            if not entry.is_file():
                best.setdefault(stem, (len(rank), entry.name, False))
            elif stem not in best or r < best[stem][0]:
                best[stem] = (r, entry.name, True)
    return {s: (os.path.join(str(images_dir), n), f) for s, (_, n, f) in best.items()}


def _lookup(ids, images_dir) -> dict:
    got = D.image_paths_for(ids, images_dir)
    assert len(got.paths) == len(got.is_file) == len(ids)
    return {i: (p, bool(f)) for i, p, f in zip(ids, got.paths, got.is_file) if p is not None}


def test_image_paths_for_finds_what_the_folder_listing_found_on_the_real_catalog(fashion_dir, myntra_styles):
    """A few hundred Myntra ids, the 5 without an image among them: the same files (and the same
    misses) as listing the whole folder."""
    img = fashion_dir / "images"
    ids = myntra_styles["id"].astype(str)
    listed = _listed(img)
    missing = sorted(set(ids) - set(listed))
    assert len(missing) == 5
    sample = missing + ids.sample(300, random_state=0).tolist()
    want = {i: listed[i] for i in sample if i in listed}
    assert _lookup(sample, img) == want and len(want) == len(set(sample)) - 5


def test_image_paths_for_edge_cases_match_the_listing(tmp_path):
    """Extension priority and case (mixed case too), regular files before FIFOs / folders / broken
    symlinks (returned with is_file False, for the loader to report), symlinks followed, dots in
    ids, and ids that would leave the folder."""
    import os

    img = tmp_path / "imgs"
    img.mkdir()
    for name in ["a1.png", "a1.jpg", "a2.webp", "a3.JPEG", "a3.txt", "a4.Jpg", "a4.png", "a5.jPeG", "a6.WEBP",
                 "a7.PnG", "x.y.jpg", "...jpg", "q.jpg.png", "target.bin", "sub/e.jpg", "u.JPG"]:
        (img / name).parent.mkdir(exist_ok=True)
        (img / name).write_bytes(b"x")
    os.mkfifo(img / "f1.jpg")                          # only a FIFO: reported
    os.mkfifo(img / "f2.jpg")
    (img / "f2.webp").write_bytes(b"x")                # a regular file of a later extension wins
    (img / "d1.jpeg").mkdir()                          # a folder named like an image
    os.mkfifo(img / "f3.Jpg")                          # a FIFO in mixed case
    (img / "s1.jpg").symlink_to(img / "target.bin")    # a symlink to a regular file: a file
    (img / "s2.png").symlink_to(img / "nowhere")       # a broken symlink: reported
    (tmp_path / "outside.jpg").write_bytes(b"x")
    ids = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "x.y", "..", "q.jpg", "q", "f1", "f2", "d1", "f3", "s1", "s2",
           "u", "zz", "sub", "sub/e", "../outside", "../imgs/a1", "", "a1\0", "a" * 300, "A1"]
    got = _lookup(ids, img)
    assert got == {i: v for i, v in _listed(img).items() if i in ids}
    j = lambda n: str(img / n)   # noqa: E731
    assert got == {"a1": (j("a1.jpg"), True), "a2": (j("a2.webp"), True), "a3": (j("a3.JPEG"), True),
                   "a4": (j("a4.Jpg"), True), "a5": (j("a5.jPeG"), True), "a6": (j("a6.WEBP"), True),
                   "a7": (j("a7.PnG"), True), "x.y": (j("x.y.jpg"), True), "..": (j("...jpg"), True),
                   "q.jpg": (j("q.jpg.png"), True), "f1": (j("f1.jpg"), False), "f2": (j("f2.webp"), True),
                   "d1": (j("d1.jpeg"), False), "f3": (j("f3.Jpg"), False), "s1": (j("s1.jpg"), True),
                   "s2": (j("s2.png"), False), "u": (j("u.JPG"), True)}
    # one extension in lower and upper case (a case-sensitive file system): lower case, every time
    (img / "a2.WEBP").write_bytes(b"x")
    (img / "a2.Webp").write_bytes(b"x")
    assert _lookup(["a2"], img) == {"a2": (j("a2.webp"), True)}
    with pytest.raises(TypeError, match=r"ids\[1\] is int"):
        D.image_paths_for(["a1", 7], img)


def test_image_paths_for_lists_the_folder_only_for_mixed_case_and_once(tmp_path, monkeypatch):
    """Probes per id; the folder is listed (for mixed-case extensions) only when some id is not
    settled by a regular .jpg/.JPG, once while the folder is unchanged, and again after a change."""
    import os

    img = tmp_path / "imgs"
    img.mkdir()
    for name in ["a.jpg", "b.JPG", "c.png"]:
        (img / name).write_bytes(b"x")
    calls = []
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: calls.append(p) or scandir(p))
    assert D.image_paths_for(["a", "b"], img).paths == [str(img / "a.jpg"), str(img / "b.JPG")]
    assert calls == []
    assert D.image_paths_for(["a", "c", "zz"], img).paths == [str(img / "a.jpg"), str(img / "c.png"), None]
    assert D.image_paths_for(["zz", "c"], img).paths == [None, str(img / "c.png")]
    assert calls == [str(img)]                          # listed once for both calls
    (img / "zz.Jpeg").write_bytes(b"x")
    st = os.stat(img)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # a change, whatever the clock's tick
    assert D.image_paths_for(["zz", "c"], img).paths == [str(img / "zz.Jpeg"), str(img / "c.png")]
    assert len(calls) == 2


def test_load_catalog_reports_entries_named_like_images_that_are_not_files(tmp_path):
    import os

    img = tmp_path / "imgs"
    img.mkdir()
    (img / "a1.Jpg").write_bytes(b"x")
    (img / "a2.jpg").mkdir()
    (img / "a3.png").symlink_to(img / "nowhere")
    df = D.load_catalog(_small(), images_dir=img, id="sku", title="name", path_col="cat")
    assert df["image_path"].tolist() == [str((img / "a1.Jpg").resolve()), None, None, None]
    rep = df.attrs["report"]
    rep = rep[rep["column"] == "image_path"].set_index("item_id")["problem"]
    assert rep["a2"] == f"image file unusable (not a regular file): {(img / 'a2.jpg').resolve()}"
    assert rep["a3"] == f"image file unusable (not a regular file): {img.resolve() / 'a3.png'}"
    assert rep["a4"] == f"image file missing: {img.resolve() / 'a4'}.<jpg|jpeg|png|webp>"
    # the chunked loader finds the same, and looks only at the kept rows' files
    src = tmp_path / "c.csv"
    _small().to_csv(src, index=False)
    parts = list(D.load_catalog_chunks(src, chunk_size=3, images_dir=img, id="sku", title="name", path_col="cat"))
    assert pd.concat([p for p, _ in parts])["image_path"].tolist() == df["image_path"].tolist()
    kept = list(D.load_catalog_chunks(src, chunk_size=3, images_dir=img, id="sku", title="name", path_col="cat",
                                      keep=lambda first, n: np.arange(first, first + n) % 2 == 0))
    got = pd.concat([p for p, _ in kept])
    assert got["item_id"].tolist() == ["a1", "a3"] and got["image_path"].tolist() == [df["image_path"][0], None]
    rep = pd.concat([p.attrs["report"] for p, _ in kept])
    assert set(rep.loc[rep["column"] == "image_path", "item_id"]) == {"a3"}


def test_image_column_relative_to_images_dir_csv_dir_or_absolute(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "p1.jpg").write_bytes(b"x")
    (tmp_path / "p2.png").write_bytes(b"x")
    src = _small().assign(img=["p1.jpg", str(tmp_path / "p2.png"), "nothere.jpg", None])
    df = D.load_catalog(src, images_dir=tmp_path / "pics", id="sku", title="name", path_col="cat", image="img")
    assert df["image_path"].tolist()[:2] == [str(tmp_path / "pics" / "p1.jpg"), str(tmp_path / "p2.png")]
    assert df["image_path"].iloc[2] is None and df["image_path"].iloc[3] is None
    assert "img" not in df.columns
    rep = df.attrs["report"].set_index("item_id")
    assert rep.loc["a3", "problem"] == f"image file missing: {tmp_path / 'pics' / 'nothere.jpg'}"
    assert rep.loc["a4", "problem"] == "no image path (column 'img' is empty)"
    # a CSV without images_dir: paths relative to the CSV's folder
    src.assign(img=["pics/p1.jpg", "p2.png", "x.jpg", ""]).to_csv(tmp_path / "cat.csv", index=False)
    df2 = D.load_catalog(tmp_path / "cat.csv", id="sku", title="name", path_col="cat", image="img")
    assert df2["image_path"].tolist()[:2] == [str(tmp_path / "pics" / "p1.jpg"), str(tmp_path / "p2.png")]
    assert set(df2.attrs["report"]["item_id"]) == {"a2", "a3", "a4"}  # a2: empty title


def test_image_column_windows_style_relative_paths_and_uppercase_ext(tmp_path):
    # a CSV written on Windows: relative image paths with backslashes, upper-case extensions
    (tmp_path / "pics" / "sub").mkdir(parents=True)
    (tmp_path / "pics" / "sub" / "p1.JPG").write_bytes(b"x")
    (tmp_path / "pics" / "p2.jpg").write_bytes(b"x")
    src = _small().assign(img=["sub\\p1.JPG", "pics\\p2.jpg", "sub\\gone.jpg", "C:\\shots\\p4.jpg"])
    df = D.load_catalog(src, images_dir=tmp_path / "pics", id="sku", title="name", path_col="cat", image="img")
    assert df["image_path"].iloc[0] == str(tmp_path / "pics" / "sub" / "p1.JPG")
    assert df["image_path"].iloc[1:].isna().all()  # pics\\p2.jpg is not under images_dir
    src.to_csv(tmp_path / "cat.csv", index=False)
    df2 = D.load_catalog(tmp_path / "cat.csv", id="sku", title="name", path_col="cat", image="img")
    assert df2["image_path"].iloc[1] == str(tmp_path / "pics" / "p2.jpg")  # relative to the CSV's folder
    rep = df2.attrs["report"]
    assert set(rep.loc[rep["column"] == "image_path", "item_id"]) == {"a1", "a3", "a4"}


@pytest.mark.parametrize(
    "change, kwargs, match",
    [
        (lambda d: d.drop(columns="name"), {}, r"no column\(s\) \['name'\]; its columns are \['sku', 'cat', 'price'\]"),
        (lambda d: d.iloc[:0], {}, "no rows: the catalog is empty"),
        (lambda d: d.assign(sku=["a1", "a2", "a1", "a2"]), {}, r"repeats id 'a1' \(rows \[0, 2\]\); 2 repeated id\(s\) in all, e.g. \['a1', 'a2'\]"),
        (lambda d: d.assign(sku=["a1", None, "a3", "a4"]), {}, r"empty in 1 row\(s\) \(rows \[1\]\)"),
        (lambda d: d.assign(cat=["A > B", "A >  > C", "A", "B"]), {}, r"row 1 \(item 'a2'\).*empty segment"),
        (lambda d: d.assign(cat=["A > B", "A", None, "B"]), {"unlabelled": "error"},
         r"row 2 \(item 'a3'\) has an empty category path"),
        (lambda d: d, {"unlabelled": "drop"}, "unlabelled must be 'keep' or 'error'"),
        (lambda d: d.assign(label=1), {}, r"\['label'\] would be overwritten"),
        (lambda d: d, {"path": ["cat"]}, "exactly one of path"),
        (lambda d: d, {"path_col": None}, "exactly one of path"),
    ],
)
def test_load_catalog_bad_input_errors(change, kwargs, match):
    kw = dict(id="sku", title="name", path_col="cat") | kwargs
    with pytest.raises(ValueError, match=match):
        D.load_catalog(change(_small()), **kw)


def test_load_catalog_keeps_unlabelled_rows_and_reports_them():
    """Rows with no category are products to categorize: kept with label None and reported by row."""
    cat = D.load_catalog(_small().assign(cat=["A > B", "A", None, " "]), id="sku", title="name", path_col="cat")
    assert cat["label"].tolist() == ["A > B", "A", None, None]
    rep = cat.attrs["report"]
    unl = rep[rep["column"] == "label"]
    assert unl["item_id"].tolist() == ["a3", "a4"] and unl["problem"].str.contains("unlabelled").all()
    # level columns: a row with every level empty is unlabelled, a partly empty one is still an error
    src = pd.DataFrame({"id": ["x", "y", "z"], "title": ["t", "u", "v"], "a": ["A", None, "B"], "b": ["a", None, "b"]})
    cat = D.load_catalog(src, path=["a", "b"])
    assert cat["label"].tolist() == ["A > a", None, "B > b"]
    assert cat.attrs["report"]["item_id"].tolist() == ["y"]


def test_load_catalog_with_an_external_taxonomy_reports_labels_outside_it():
    cat = D.load_catalog(_small().assign(cat=["A > B", "A", "A > C", None]), id="sku", title="name", path_col="cat",
                         taxonomy=["A", "A > B", "A > Cc", "Z"])
    assert cat.attrs["taxonomy"].classes == ["A", "A > B", "A > Cc", "Z"]
    rep = cat.attrs["report"]
    bad = rep[rep["problem"].str.contains("not a class of the taxonomy")]
    assert bad["item_id"].tolist() == ["a3"] and "A > Cc" in bad["problem"].iloc[0]


def test_load_catalog_empty_level_value_names_row_and_column():
    src = pd.DataFrame({"id": ["x", "y"], "title": ["t", "u"], "a": ["A", "B"], "b": ["a", np.nan]})
    with pytest.raises(ValueError, match=r"row 1 \(item 'y'\) has an empty category level in column 'b'"):
        D.load_catalog(src, path=["a", "b"])
    src2 = pd.DataFrame({"id": ["x"], "title": ["t"], "a": ["A > B"], "b": ["c"]})
    with pytest.raises(ValueError, match="containing the separator"):
        D.load_catalog(src2, path=["a", "b"])


def test_load_catalog_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        D.load_catalog(tmp_path / "missing.csv", path_col="cat")
    with pytest.raises(FileNotFoundError, match="images_dir .*nodir"):
        D.load_catalog(_small(), images_dir=tmp_path / "nodir", id="sku", title="name", path_col="cat")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        D.load_catalog(tmp_path / "empty.csv", path_col="cat")
    (tmp_path / "header.csv").write_text("id,title,cat\n", encoding="utf-8")
    with pytest.raises(ValueError, match="catalog is empty"):
        D.load_catalog(tmp_path / "header.csv", path_col="cat")
    with pytest.raises(TypeError, match="CSV path or a pandas DataFrame"):
        D.load_catalog([1, 2, 3], path_col="cat")


# ------------------------------------------------------------------------------ tutorial catalog
def test_public_exports():
    assert sk.datasets is D
    for name in ["load_catalog", "load_fashion", "load_fashion_tutorial", "load_google_taxonomy"]:
        assert getattr(sk, name) is getattr(D, name)


def test_tutorial_is_package_data_and_small():
    d = D.tutorial_dir()
    assert d.is_relative_to(Path(sk.__file__).parent)
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert total <= 15e6


def test_tutorial_contents_cover_every_leaf(tutorial, fashion):
    assert 2800 <= len(tutorial) <= 3200
    assert list(tutorial.columns) == list(fashion.columns)
    assert set(tutorial["label"]) == set(fashion["label"])  # every leaf path incl. the label-noise ones
    tax = sk.Taxonomy.from_paths(tutorial["label"])
    assert tax.n_classes == 154 and len(tax.conflicts) == 52
    # rows are the original rows of the full catalog
    full = fashion.set_index("item_id")
    t = tutorial.set_index("item_id")
    cols = ["title", "label", "gender", "baseColour", "usage"]
    pd.testing.assert_frame_equal(t[cols], full.loc[t.index, cols])


def test_tutorial_follows_sqrt_quota_and_is_reproducible(tutorial, fashion):
    mod = _script()
    sizes = fashion.groupby("label").size().sort_index()
    quotas = mod.leaf_quotas(sizes, 3000, tiny=4)
    got = tutorial.groupby("label").size().reindex(sizes.index)
    assert (got == quotas).all()
    assert (got[sizes <= 4] == sizes[sizes <= 4]).all()  # tiny leaves kept whole
    assert (got >= 1).all() and got.sum() == len(tutorial)
    # proportional to sqrt(size): quota / sqrt(n) is one constant up to rounding for non-tiny, non-capped leaves
    mid = (sizes > 4) & (quotas < sizes) & (quotas > 1)
    ratio = quotas[mid] / np.sqrt(sizes[mid])
    assert (ratio.max() - ratio.min()) * np.sqrt(sizes[mid]).min() <= 1.0 + 1e-9
    # the same seed on the same source gives exactly the committed subset
    assert sorted(mod.select_subset(fashion, 3000, seed=0)) == sorted(tutorial["item_id"])
    assert sorted(mod.select_subset(fashion, 3000, seed=1)) != sorted(tutorial["item_id"])


def test_tutorial_images_are_original_bytes_and_report_matches(tutorial, fashion_dir):
    has = tutorial["image_path"].notna()
    for p in tutorial.loc[has, "image_path"]:
        p = Path(p)
        assert p.read_bytes() == (fashion_dir / "images" / p.name).read_bytes()
    no_img = set(tutorial.loc[~has, "item_id"])
    assert _report_ids(tutorial, "image_path") == no_img
    assert all(not (fashion_dir / "images" / f"{i}.jpg").exists() for i in no_img)
    manifest = json.loads((D.tutorial_dir() / "MANIFEST.json").read_text())
    assert manifest["n_items"] == len(tutorial) and manifest["n_leaves"] == 170
    assert {r["item_id"] for r in manifest["included_problems"]} == set(tutorial.attrs["report"]["item_id"])


def test_subset_script_builds_same_output_from_a_source(tmp_path, myntra_styles, fashion_dir):
    # a small synthetic "download": 3 leaves, one tiny; build twice -> identical files
    mod = _script()
    rows = myntra_styles[myntra_styles["articleType"].isin(["Belts", "Ties", "Waistcoat"])]
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    _write_styles(src / "styles.csv", rows)
    for i in rows["id"]:
        f = fashion_dir / "images" / f"{i}.jpg"
        if f.exists():
            (src / "images" / f.name).write_bytes(f.read_bytes())
    m1 = mod.build(src, tmp_path / "out1", n_target=60, seed=3)
    m2 = mod.build(src, tmp_path / "out2", n_target=60, seed=3)
    assert (tmp_path / "out1" / "styles.csv").read_bytes() == (tmp_path / "out2" / "styles.csv").read_bytes()
    sub = D.load_fashion(tmp_path / "out1")
    full = D.load_fashion(src)
    assert set(sub["label"]) == set(full["label"]) and m1["n_items"] == len(sub) == m2["n_items"]
    assert abs(len(sub) - 60) <= len(set(full["label"]))
    with pytest.raises(RuntimeError, match="MB"):
        mod.build(src, tmp_path / "out3", n_target=60, seed=3, max_mb=0.001)
    assert not (tmp_path / "out3").exists()


# ------------------------------------------------------------------------------ google taxonomy
def test_load_google_taxonomy_real(google_taxonomy_file):
    g = D.load_google_taxonomy(google_taxonomy_file)
    assert list(g.columns) == ["id", "path", "depth", "name"]
    assert len(g) == 5595 and g["id"].is_unique and g["path"].is_unique
    assert g["depth"].min() == 1 and g["depth"].max() == 7
    assert (g["depth"] == 1).sum() == 21
    assert g.iloc[0].to_dict() == {"id": 1, "path": "Animals & Pet Supplies", "depth": 1,
                                   "name": "Animals & Pet Supplies"}
    row = g[g["id"] == 3237].iloc[0]
    assert row["path"] == "Animals & Pet Supplies > Live Animals" and row["name"] == "Live Animals"
    # every non-top-level category's parent is listed too
    assert set(g.loc[g["depth"] > 1, "path"].str.rsplit(" > ", n=1).str[0]) <= set(g["path"])


@pytest.mark.parametrize(
    "body, match",
    [
        ("1 - A\n2 - A > B\nnot a line\n", r"line 4: expected 'ID - Level1"),
        ("1 - A\n2 - A >  > C\n", r"line 3: empty category name"),
        ("1 - A\n1 - B\n", r"line 3: id 1 already used on line 2"),
        ("1 - A\n2 - A\n", r"line 3: category 'A' already listed on line 2"),
        ("1 -\n", r"line 2: expected"),
        ("", "holds no categories"),
    ],
)
def test_load_google_taxonomy_malformed(tmp_path, body, match):
    f = tmp_path / "tax.txt"
    f.write_text("# Google_Product_Taxonomy_Version: test\n" + body, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as e:
        D.load_google_taxonomy(f)
    assert str(f) in str(e.value)


def test_load_google_taxonomy_small_and_missing(tmp_path):
    f = tmp_path / "tax.txt"
    f.write_text("# v\n\n10 - Café\n11 - Café > Tasse - groß\n", encoding="utf-8")
    g = D.load_google_taxonomy(f)
    assert g["path"].tolist() == ["Café", "Café > Tasse - groß"] and g["depth"].tolist() == [1, 2]
    assert g["id"].dtype == np.int64
    with pytest.raises(FileNotFoundError, match="nofile.txt"):
        D.load_google_taxonomy(tmp_path / "nofile.txt")


def test_catalogs_and_products_to_predict_map_ids_and_image_paths_by_one_rule(tmp_path):
    """load_catalog and products_frame (Predictor, semcat predict): a whole-float id is the same text, and a
    Windows-style relative image path is found by both (it used to be found only by load_catalog)."""
    from semcat_kit.datasets.products import products_frame

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "1.jpg").write_bytes(b"x")
    df = pd.DataFrame({"id": [7.0, 8.0], "title": ["a", "b"], "img": ["sub\\1.jpg", "sub/1.jpg"], "cat": ["A > B", "A > C"]})
    cat = D.load_catalog(df, images_dir=tmp_path, id="id", title="title", image="img", path_col="cat")
    prods = products_frame(df, id="id", title="title", image="img", images_dir=tmp_path)
    assert cat["item_id"].tolist() == prods["item_id"].tolist() == ["7", "8"]
    assert Path(prods["image_path"][0]).is_file() and Path(prods["image_path"][0]) == Path(cat["image_path"][0])
    # titles: surrounding spaces stripped by both (the embedding cache is keyed by the text), the same
    # image path text through a symlinked folder (both resolve it)
    (tmp_path / "link").symlink_to(tmp_path / "sub")
    df2 = pd.DataFrame({"id": ["1", "2", "3"], "title": ["  red shirt ", "\tblue\n", "   "],
                        "img": ["link/1.jpg", "sub/1.jpg", "sub/1.jpg"], "cat": ["A > B", "A > C", "A > C"]})
    cat2 = D.load_catalog(df2, images_dir=tmp_path, id="id", title="title", image="img", path_col="cat")
    prods2 = products_frame(df2, id="id", title="title", image="img", images_dir=tmp_path)
    assert cat2["title"].tolist()[:2] == prods2["title"].tolist()[:2] == ["red shirt", "blue"]
    assert cat2["title"][2] == "" and pd.isna(prods2["title"][2])       # blank: reported / no title
    assert cat2["image_path"].tolist() == prods2["image_path"].tolist()
