"""Bundled and well-known catalogs: the Kaggle "Fashion Product Images" layout and the tutorial
catalog shipped inside the package.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .mapping import load_catalog
from .report import make_report

__all__ = ["load_fashion", "load_fashion_tutorial", "tutorial_dir", "FASHION_PATH_COLUMNS"]

#: The Kaggle "Fashion Product Images" columns that form the category path.
FASHION_PATH_COLUMNS = ("masterCategory", "subCategory", "articleType")


def load_fashion(dir, styles: str = "styles.csv", images: str = "images") -> pd.DataFrame:
    """Load the Kaggle "Fashion Product Images" layout (``styles.csv`` + ``images/<id>.jpg``).

    The label is ``masterCategory > subCategory > articleType``, the title ``productDisplayName``;
    the other columns (gender, baseColour, season, year, usage, and the three level columns) are
    kept. Malformed lines of the original Kaggle file (unquoted commas in the title) are repaired
    and listed in ``attrs["report"]`` together with missing titles and images.

    Parameters
    ----------
    dir : str or Path
        Folder holding ``styles.csv`` and ``images/``.
    styles, images : str
        File / folder names inside ``dir``.
    """
    d = Path(dir).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"fashion folder {str(d)!r} does not exist; give the folder holding "
                                f"{styles} and {images}/ (the Kaggle 'Fashion Product Images' download)")
    csv = d / styles
    if not csv.is_file():
        raise FileNotFoundError(f"{str(csv)!r} not found: the fashion folder must contain {styles} "
                                f"(found {sorted(p.name for p in d.iterdir())[:10]})")
    img = d / images
    if not img.is_dir():
        return _no_images(csv, img)
    return load_catalog(csv, images_dir=img, id="id", title="productDisplayName",
                        path=list(FASHION_PATH_COLUMNS))


def _no_images(csv: Path, img: Path) -> pd.DataFrame:
    df = load_catalog(csv, id="id", title="productDisplayName", path=list(FASHION_PATH_COLUMNS))
    rep = pd.DataFrame(df.attrs["report"])
    extra = pd.DataFrame({"item_id": df["item_id"], "column": "image_path",
                          "problem": f"images folder {str(img)!r} does not exist"})
    df.attrs["report"] = make_report((pd.concat([rep, extra], ignore_index=True) if len(rep) else extra)
                                      .to_dict("records"))
    return df


def tutorial_dir() -> Path:
    """Folder of the bundled tutorial catalog (``styles.csv`` + ``images/``) inside the package."""
    from importlib.resources import files

    return Path(str(files("semcat_kit") / "data" / "fashion_tutorial"))


def load_fashion_tutorial() -> pd.DataFrame:
    """The bundled tutorial catalog: ~3,000 Myntra products covering all 170 category paths.

    Drawn from the full Kaggle/Myntra catalog by ``scripts/make_tutorial_subset.py`` (seeded; a
    per-leaf quota proportional to the square root of the leaf size, tiny leaves kept whole).
    Works offline after ``pip install``. Same columns as :func:`load_fashion`.
    """
    d = tutorial_dir()
    if not (d / "styles.csv").is_file():
        raise FileNotFoundError(f"the bundled tutorial catalog is missing from {d}; reinstall semcat_kit "
                                "or run scripts/make_tutorial_subset.py")
    return load_fashion(d)
