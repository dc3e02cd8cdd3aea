"""The image file of a product, found by its id in a folder (``<images_dir>/<id>.<ext>``) or named in an
image column (:func:`resolve_image_path`; catalogs and products to predict alike).

Image bytes, checks and digests are in :mod:`semcat_kit.datasets.images`.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "image_paths_for", "resolve_image_path"]

#: File extensions tried (in this order) when images are found by item id.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class ImageFiles(NamedTuple):
    """What :func:`image_paths_for` found: one entry per id."""

    #: ``DIR/<id>.<ext>`` (str) of the file found, or None when there is no entry by such a name.
    paths: list
    #: True where ``paths`` is a regular file (or a symlink to one); False where the only entries
    #: named like an image are something else (a FIFO, a device, a folder, a broken symlink: to be
    #: reported, never read) or there is none.
    is_file: np.ndarray


_EXT_RANK = {e: r for r, e in enumerate(IMAGE_EXTENSIONS)}
_NOT_IN_NAME = {"/", "\0"} | {s for s in (os.sep, os.altsep) if s}
_MIXED_CASE: dict[str, tuple[tuple, dict]] = {}    # folder -> (its (dev, ino, mtime_ns), mixed-case entries)


def image_paths_for(ids, images_dir, progress: bool = True) -> ImageFiles:
    """The image file of each product id in a folder: ``<images_dir>/<id>.<ext>``.

    ``ext`` is one of :data:`IMAGE_EXTENSIONS` in any letter case (``.jpg``, ``.JPG``, ``.Jpg``);
    a regular file (or a symlink to one) of the earliest extension in that order wins (at one
    extension: lower case, then upper, then mixed). When no regular file has such a name but
    another entry does (a FIFO, a device, a folder, a broken symlink), that entry is returned with
    ``is_file`` False so that the caller reports it. This is what :func:`load_catalog` with
    ``images_dir=`` uses, and ``semcat predict --images``.

    Each id is probed (``lstat`` of ``<id>.jpg``, ``<id>.JPG``, ``<id>.jpeg``, ...: one call for a
    product with a ``.jpg``, at most eight for one without an image), never by listing the folder
    into memory, so a folder of millions of images costs nothing for a catalog that uses a few of
    them. Only mixed-case extensions cannot be probed (48 spellings); for them the folder is listed
    once, when some id is not settled by a regular ``.jpg``/``.JPG`` file, keeping just the
    mixed-case names (usually none) for as long as the folder's modification time is unchanged.
    On a case-insensitive file system the lower-case probe finds every spelling (and ids match
    file names regardless of case, as the system does).

    An empty id, or one holding a path separator or a NUL, has no image: a file name is the id plus
    ``.ext``, so nothing outside the folder is ever looked at (``..`` names the file ``...jpg``).

    Parameters
    ----------
    ids : sequence of str
        Product ids.
    images_dir : str or Path
        The folder; returned paths are ``os.path.join(str(images_dir), name)`` (resolve it first
        for absolute paths).
    progress : bool
        A ``tqdm`` bar from 50,000 ids on (a probe costs ~1-12 us on a local disk, more on a
        network file system).

    Returns
    -------
    ImageFiles
        ``paths`` (list of str or None) and ``is_file`` (bool array), aligned with ``ids``.
    """
    folder = str(images_dir)
    base = os.path.join(folder, "")
    exts = [(e, e.upper()) for e in IMAGE_EXTENSIONS]
    paths: list = [None] * len(ids)
    is_file = np.zeros(len(ids), dtype=bool)
    mixed = None
    for k, i in enumerate(tqdm(ids, desc="finding image files", unit="id", disable=not progress or len(ids) < 50_000)):
        if not isinstance(i, str):
            raise TypeError(f"image_paths_for: ids[{k}] is {type(i).__name__} ({i!r}), not str")
        if not i or any(c in i for c in _NOT_IN_NAME):
            continue
        other = None                                   # the first entry that is not a regular file
        for r, (low, up) in enumerate(exts):
            for e in (low, up):
                kind = _entry_kind(f"{base}{i}.{e}")
                if kind is True:
                    break
                if kind is False and other is None:
                    other = (r, f"{base}{i}.{e}")
            else:
                e = None
            if e is not None:
                found = (r, f"{base}{i}.{e}")
                break
        else:
            found = None
        if found is None or found[0] > 0:              # a mixed-case spelling may come first
            if mixed is None:
                mixed = _mixed_case_entries(folder)
            for r, name, reg in mixed.get(i, ()):
                if reg and (found is None or r < found[0]):
                    found = (r, base + name)
                    break
                if not reg and other is None:
                    other = (r, base + name)
        if found is not None:
            paths[k], is_file[k] = found[1], True
        elif other is not None:
            paths[k] = other[1]
    return ImageFiles(paths, is_file)


def _entry_kind(path: str):
    """True: a regular file (or a symlink to one); False: another entry; None: no entry."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    except OSError as e:
        if e.errno in (errno.ENAMETOOLONG, errno.EINVAL):   # a name no file can have (too long, ':' on Windows)
            return None
        raise
    if stat.S_ISREG(st.st_mode):
        return True
    if stat.S_ISLNK(st.st_mode):
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            return False                                # a broken symlink: reported, not read
    return False


def _mixed_case_entries(folder: str) -> dict:
    """``{stem: [(rank, name, is_file), ...]}`` of the entries whose extension is an image extension
    in mixed case (``x.Jpg``), from one listing of ``folder``, kept while its mtime is unchanged."""
    st = os.stat(folder)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    hit = _MIXED_CASE.get(folder)
    if hit is not None and hit[0] == key:
        return hit[1]
    out: dict = {}
    with os.scandir(folder) as it:
        for entry in it:
            stem, dot, ext = entry.name.rpartition(".")
            low = ext.lower()
            if not dot or low not in _EXT_RANK or ext == low or ext == ext.upper():
                continue
            out.setdefault(stem, []).append((_EXT_RANK[low], entry.name, entry.is_file()))
    for v in out.values():
        v.sort(key=lambda t: (t[0], not t[2], t[1]))
    if len(_MIXED_CASE) >= 16:
        _MIXED_CASE.clear()
    _MIXED_CASE[folder] = (key, out)
    return out


def resolve_image_path(raw: str, base) -> Path:
    """An image-column value as a path: absolute as it is, else relative to ``base`` (None: as written).
    The one rule of :func:`semcat_kit.load_catalog` and of the products to predict
    (:func:`semcat_kit.datasets.products.products_frame`, ``semcat predict``).

    A relative Windows-style path (``images\\123.jpg``, from a CSV made on Windows) that does not
    exist as written is retried with ``/`` separators on systems where ``\\`` is not one.
    """
    p = Path(raw).expanduser()
    p = p if p.is_absolute() or base is None else Path(base) / p
    if "\\" in raw and os.sep != "\\" and not p.is_file():
        q = Path(raw.replace("\\", "/")).expanduser()
        q = q if q.is_absolute() or base is None else Path(base) / q
        if q.is_file():
            return q
    return p
