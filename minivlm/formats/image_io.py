"""Images in: a file, a PIL image or an array becomes the uint8 [H, W, 3] pixels the tiler cuts up.

People feed minivlm whatever is on their disk, so every input either works as a viewer would show it or stops
here with an `ImageError` that names the problem and what to do. Nothing is silently guessed:
- Phone photos often store pixels sideways with an EXIF "orientation" tag that viewers apply. Hugging Face's
  `load_image`, which the official pipeline uses for paths, applies it, so `open_image` does too. PIL images and
  arrays are used as given, as the official processor does.
- A truncated file (an interrupted download) is refused unless the caller accepts it; PIL then fills in the
  missing part, which the official code does silently.
- A file whose header claims more than `MAX_IMAGE_PIXELS` is refused before any pixel is decoded.
- An animated GIF/WebP/PNG gives its first frame, with a warning that says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# The tiler's own checks, run here too so that a bad file is refused from its header, before decoding.
from ..core.tiler import MAX_ASPECT_RATIO, ImageError, check_aspect_ratio  # noqa: F401 (re-exported)

# 250 megapixels: above the largest phone sensors (200 MP) and a full-page scan at 1200 dpi (140 MP), yet a
# 20000 x 20000 px file of a few kB (a "decompression bomb") is refused before it takes 1.2 GB to decode and ~5 GB
# in the tiler's first float32 resize. Raise it with open_image(max_image_pixels=...) or --max-image-pixels.
MAX_IMAGE_PIXELS = 250_000_000
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")  # how PIL opens 16-bit greyscale PNG and TIFF


class TruncatedImageError(ImageError):
    """The file ends early; open_image(path, allow_truncated=True) accepts it."""


def to_rgb_array(image: Image.Image | np.ndarray | str | Path) -> np.ndarray:
    """An image path, a PIL image (any mode) or a uint8 [H, W, 3] array -> uint8 [H, W, 3]."""
    if isinstance(image, (str, Path)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        image = _pil_to_rgb(image)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an image path, a PIL image or a uint8 [H, W, 3] array, got {_describe(image)}; "
                         "convert it with PIL's Image.open(...).convert('RGB')")
    if 0 in image.shape:
        raise ImageError(f"the image is empty ({image.shape[0]}x{image.shape[1]} px)")
    return image


def _describe(x: object) -> str:
    return f"array {x.dtype} {list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    try:
        image.load()  # an image the caller opened lazily decodes here: its errors become ImageError too
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, ... on damaged data
        raise ImageError(f"the image could not be decoded ({type(e).__name__}: {e}); "
                         "minivlm.image_io.open_image(path) says more about a damaged file") from None
    if image.mode in SIXTEEN_BIT_MODES:
        # Departs from the official code: PIL's convert('RGB') clips 16-bit values at 255, which turns most of
        # the picture white. We keep the high byte instead, as PIL itself does when it reads 16-bit colour PNGs.
        grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)  # [H, W]
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("I", "F"):  # convert('RGB') would clip these too, and they have no standard range
        raise ImageError(f"a {image.mode}-mode image (32-bit {'integer' if image.mode == 'I' else 'float'} pixels) "
                         "has no standard brightness range; scale it to 8 bits (mode 'L' or 'RGB') first")
    if image.mode == "RGB":
        return np.array(image)
    try:
        with warnings.catch_warnings():  # PIL's advice to convert palette transparency to RGBA does not apply
            warnings.filterwarnings("ignore", message="Palette images with Transparency")
            # Like the official code: convert('RGB') drops alpha WITHOUT compositing (a transparent pixel keeps
            # its stored colour, often black); L and P expand to RGB; CMYK goes through PIL's conversion.
            return np.array(image.convert("RGB"))
    except ValueError as e:  # a mode PIL cannot convert, e.g. "La"
        raise ImageError(f"a {image.mode}-mode image cannot be converted to RGB ({e}); save it as RGB first") from None


@contextmanager
def _pil_settings(load_truncated: bool) -> Iterator[None]:
    """PIL keeps its size limit and truncation switch as module globals: set them for one call, then restore
    (so two threads opening images at once may see each other's settings).

    PIL's own size check (a warning above 89 MP, an error above 179 MP) is off here: `_decode` applies ours.
    """
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, load_truncated
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode(path: Path, max_pixels: int | None, load_truncated: bool) -> Image.Image:
    """Read the header, check the size, decode the first frame, apply EXIF orientation. Errors -> ImageError."""
    try:
        with _pil_settings(load_truncated), Image.open(path) as image:
            width, height = image.size
            # Departs from the official code, which has PIL's limit (an error above 179 MP): ours is 250 MP.
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(f"{path}: {width}x{height} px is {width * height / 1e6:.3g} megapixels, over the "
                                 f"limit of {max_pixels / 1e6:.3g} (a decompression bomb?); if the image is genuine, "
                                 "raise the limit: --max-image-pixels N (open_image(path, max_image_pixels=N))")
            check_aspect_ratio(width, height, str(path))  # cheap now, before decoding
            frames = getattr(image, "n_frames", 1)
            # MPO is a camera JPEG with extra pictures (a preview, a depth map): its first one is the photo.
            if frames > 1 and image.format != "MPO":
                warnings.warn(f"{path}: animated or multi-page image: using the first frame of {frames}",
                              stacklevel=3)
            image.seek(0)
            image.load()
            return ImageOps.exif_transpose(image)  # a new, loaded image: usable after the file is closed
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read (PNG, JPEG, WebP, GIF, ...)") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied; make the file readable") from None
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, ... on damaged data
        if isinstance(e, OSError) and "truncated" in str(e):
            raise TruncatedImageError(
                f"{path}: the file is truncated (an interrupted download or copy?); get it again, or accept it "
                "with the missing part filled in: --allow-truncated (open_image(path, allow_truncated=True))"
            ) from None
        raise ImageError(f"{path}: the image could not be decoded ({type(e).__name__}: {e}); "
                         "the file may be damaged") from None


def open_image(path: str | Path, allow_truncated: bool = False,
               max_image_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file as a viewer shows it: EXIF orientation applied, pixels loaded now (errors surface here).

    allow_truncated: accept a file that ends early; PIL fills in the missing part (and we warn).
    max_image_pixels: refuse larger images, judged from the header before decoding (None: no limit).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {'a folder, not an image file' if path.is_dir() else 'no such image file'}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); did a download or copy fail?")
    # Departs from the official code, which fills in a truncated file without a word: we ask first.
    try:
        return _decode(path, max_image_pixels, load_truncated=False)
    except TruncatedImageError:
        if not allow_truncated:
            raise
    warnings.warn(f"{path}: the file is truncated; the missing part is filled in", stacklevel=2)
    return _decode(path, max_image_pixels, load_truncated=True)
