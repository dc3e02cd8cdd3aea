"""Safe image loading: any product photo in, an RGB ``PIL.Image`` out, or a clear ``ImageError``.

Handles greyscale, palette (with or without transparency), RGBA/LA (composited on white, the
usual product-photo background), CMYK and 16-bit modes; applies the EXIF orientation; refuses
images whose header declares more than ``max_pixels`` pixels *before* decoding them
(decompression-bomb guard). A missing, empty, truncated or corrupt file raises ``ImageError``
whose ``reason`` is a short human-readable string, so callers can report it per item.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps

__all__ = ["ImageError", "NO_IMAGE_PATH", "image_problem", "load_image", "to_rgb", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_BYTES", "check_image_file",
           "read_image_bytes", "image_digest"]

#: Default refusal threshold: 64 megapixels (e.g. 8000 x 8000) is far beyond any product photo.
DEFAULT_MAX_PIXELS = 64_000_000
#: Default file-size limit of an image file: 256 MiB (a product photo is a few MB at most).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 20

ImageSource = Union[str, os.PathLike, bytes, Image.Image]


#: How every report names a product whose image cell is empty (no file named): the catalog report,
#: ``Embeddings.failures``, predictions.
NO_IMAGE_PATH = "no image path"


def image_problem(reason: str, path) -> str:
    """The one wording of an image file that was named but cannot be used, in every report (catalog
    report, ``Embeddings.failures``, the ``failures`` column of predictions, ``semcat predict``):
    ``image file missing: <path>`` when there is no such file, ``image file unusable (<reason>):
    <path>`` otherwise (``reason``: an :class:`ImageError`'s). An empty image cell is
    :data:`NO_IMAGE_PATH` instead."""
    if reason == "missing file":
        return f"image file missing: {path}"
    return f"image file unusable ({reason}): {path}"


class ImageError(ValueError):
    """An image that cannot be used. ``reason`` says why; ``source`` says which one."""

    def __init__(self, reason: str, source: object = None):
        self.reason = reason
        self.source = source
        where = f"{source}: " if source is not None else ""
        super().__init__(f"{where}{reason}")


def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def _open_checked(path, max_bytes: int | None):
    """Open ``path`` for reading after checking it is a regular file of at most ``max_bytes``.

    The file is opened non-blocking (a FIFO never blocks the open) and checked with ``fstat`` on
    the open descriptor (no race between the check and the read). Returns ``(file, size)``.
    """
    label = str(path)
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError("missing file", label) from None
    except IsADirectoryError:
        raise ImageError("not a regular file (a folder)", label) from None
    except OSError as e:
        raise ImageError(f"unreadable file ({e.strerror or e})", label) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"not a regular file ({_kind(st.st_mode)})", label)
        if st.st_size == 0:
            raise ImageError("empty file (0 bytes)", label)
        if max_bytes is not None and st.st_size > max_bytes:
            raise ImageError(f"file too large ({st.st_size:,} bytes > max_bytes={max_bytes:,}; raise max_bytes "
                             "if this image is genuine)", label)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def check_image_file(path, max_bytes: int | None = DEFAULT_MAX_BYTES) -> int:
    """Check that ``path`` is a regular, non-empty file of at most ``max_bytes``; return its size.

    The one check every reader of image files goes through (catalog loader, encoder, predictor,
    widgets): a FIFO would block a reader forever and a device such as ``/dev/zero`` would fill
    memory.

    Raises
    ------
    ImageError
        ``reason`` says what the path is (missing, a folder, a FIFO, a device, empty, too large).
    """
    f, size = _open_checked(path, max_bytes)
    f.close()
    return size


def read_image_bytes(path, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of an image file, after :func:`check_image_file`'s checks."""
    f, size = _open_checked(path, max_bytes)
    with f:
        data = f.read(size + 1 if max_bytes is None else min(size, max_bytes) + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(f"file too large (grew beyond max_bytes={max_bytes:,} while read)", str(path))
    return data


def image_digest(path, digest_size: int = 16, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """BLAKE2b digest of an image file's bytes, streamed in 1 MiB chunks (memory O(1) in the size).

    Equal to ``hashlib.blake2b(data, digest_size=digest_size).digest()`` of the whole file, so
    content keys computed either way agree. Checks the file first (:func:`check_image_file`).
    """
    f, _ = _open_checked(path, max_bytes)
    h = hashlib.blake2b(digest_size=digest_size)
    n = 0
    with f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            n += len(chunk)
            if max_bytes is not None and n > max_bytes:
                raise ImageError(f"file too large (grew beyond max_bytes={max_bytes:,} while read)", str(path))
            h.update(chunk)
    return h.digest()


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to RGB; transparent pixels are composited onto ``background``.

    Parameters
    ----------
    img : PIL.Image.Image
        An opened (decoded) image in any mode.
    background : tuple of int
        RGB colour placed behind transparent pixels (white by default).

    Returns
    -------
    PIL.Image.Image
        An RGB image.
    """
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale into 8 bits rather than clipping to white
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray((arr * (255.0 / hi)).clip(0, 255).astype("uint8"), "L")
    if img.mode == "F":
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((arr.clip(0, 1) * 255).astype("uint8"), "L")
    return img.convert("RGB")


def load_image(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               max_bytes: int | None = DEFAULT_MAX_BYTES) -> Image.Image:
    """Open, validate and fully decode an image as RGB with EXIF orientation applied.

    Parameters
    ----------
    source : str, path, bytes or PIL.Image.Image
        A file path, the raw file bytes, or an already opened image.
    max_pixels : int or None
        Refuse images whose declared width x height exceeds this (checked from the header,
        before decoding). ``None`` disables the guard.
    max_bytes : int or None
        Refuse files larger than this; a path must be a regular file (see :func:`check_image_file`).

    Returns
    -------
    PIL.Image.Image
        A decoded RGB image.

    Raises
    ------
    ImageError
        Missing file, not a regular file (folder, FIFO, device), 0-byte or too large file,
        unrecognised/corrupt/truncated data, or too many pixels.
    """
    if isinstance(source, Image.Image):
        img = source
        _check_pixels(img, max_pixels, source=None)
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
        except Exception as e:  # noqa: BLE001 - any decoder failure is an unusable image
            raise ImageError(f"corrupt image ({type(e).__name__}: {e})") from e

    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), None
        if len(data) == 0:
            raise ImageError("empty file (0 bytes)")
        fp: object = io.BytesIO(data)
    else:
        path = Path(source)
        label = str(path)
        fp, _ = _open_checked(path, max_bytes)   # a regular file of bounded size, or ImageError
    try:
        with warnings.catch_warnings():
            # PIL's own bomb check only warns below 2x its limit; we enforce ours explicitly.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                _check_pixels(img, max_pixels, label)
                img.load()  # decode now: truncated/corrupt data fails here, not later
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb refused ({e})", label) from e
    except Image.UnidentifiedImageError as e:
        raise ImageError("not a recognised image format (corrupt file?)", label) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise ImageError("truncated image file", label) from e
        raise ImageError(f"corrupt image ({type(e).__name__}: {msg})", label) from e
    finally:
        fp.close()   # PIL does not close a file object it was given


def _check_pixels(img: Image.Image, max_pixels: int | None, source: object) -> None:
    if max_pixels is None:
        return
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(
            f"decompression bomb refused: {w}x{h} = {w * h:,} pixels > max_pixels={max_pixels:,} "
            "(raise max_pixels if this image is genuine)",
            source,
        )
