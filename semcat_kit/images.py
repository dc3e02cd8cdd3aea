"""Safe image loading: any product photo in, an RGB ``PIL.Image`` out, or a clear ``ImageError``.

Handles greyscale, palette (with or without transparency), RGBA/LA (composited on white, the
usual product-photo background), CMYK and 16-bit modes; applies the EXIF orientation; refuses
images whose header declares more than ``max_pixels`` pixels *before* decoding them
(decompression-bomb guard). A missing, empty, truncated or corrupt file raises ``ImageError``
whose ``reason`` is a short human-readable string, so callers can report it per item.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps

__all__ = ["ImageError", "load_image", "to_rgb", "DEFAULT_MAX_PIXELS"]

#: Default refusal threshold: 64 megapixels (e.g. 8000 x 8000) is far beyond any product photo.
DEFAULT_MAX_PIXELS = 64_000_000

ImageSource = Union[str, os.PathLike, bytes, Image.Image]


class ImageError(ValueError):
    """An image that cannot be used. ``reason`` says why; ``source`` says which one."""

    def __init__(self, reason: str, source: object = None):
        self.reason = reason
        self.source = source
        where = f"{source}: " if source is not None else ""
        super().__init__(f"{where}{reason}")


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


def load_image(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, validate and fully decode an image as RGB with EXIF orientation applied.

    Parameters
    ----------
    source : str, path, bytes or PIL.Image.Image
        A file path, the raw file bytes, or an already opened image.
    max_pixels : int or None
        Refuse images whose declared width x height exceeds this (checked from the header,
        before decoding). ``None`` disables the guard.

    Returns
    -------
    PIL.Image.Image
        A decoded RGB image.

    Raises
    ------
    ImageError
        Missing file, 0-byte file, unrecognised/corrupt/truncated data, or too many pixels.
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
        if not path.exists():
            raise ImageError("missing file", label)
        if not path.is_file():
            raise ImageError("not a regular file", label)
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes)", label)
        fp = path
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
