"""Opening image files the way a user expects: the picture as it is shown, not as it is stored.

Phone photos often store pixels sideways with an EXIF "orientation" tag; viewers rotate them on display.
Hugging Face's `load_image` (which the official pipeline uses for paths) applies that tag, so we do too.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .tiler import ImageError


def open_image(path: str | Path) -> Image.Image:
    """Open an image file, apply its EXIF orientation, and load the pixels now (so errors surface here)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image PIL can read (PNG, JPEG, WebP, GIF, ...)") from None
    except OSError as e:
        raise ImageError(f"{path}: the image could not be decoded ({e})") from None
