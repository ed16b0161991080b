"""Images in: a file, a PIL image or an array becomes the uint8 [H, W, 3] pixels the tiler cuts up.

People feed minivlm whatever is on their disk, so every input either works as a viewer would show it or stops
here with an `ImageError` that names the problem and what to do. Nothing is silently guessed:
- Phone photos often store pixels sideways with an EXIF "orientation" tag that viewers apply. Hugging Face's
  `load_image`, which the official pipeline uses for paths, applies it, so `open_image` does too. PIL images and
  arrays are used as given, as the official processor does.
- A truncated file (an interrupted download) is refused unless the caller accepts it; the missing part is then
  filled in as PIL does, which the official code does silently.
- A file whose header claims more than `MAX_IMAGE_PIXELS` is refused before any pixel is decoded.
- An animated GIF/WebP/PNG gives its first frame, with a warning that says so.

PIL keeps its size limit and its truncated-file switch as process-wide globals (`Image.MAX_IMAGE_PIXELS`,
`ImageFile.LOAD_TRUNCATED_IMAGES`). `open_image` never touches them: it applies its own limit to the header and
handles a truncated file itself, so threads opening images with different options each get their own.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The tiler's own checks, run here too so that a bad file is refused from its header, before decoding.
from ..core.tiler import MAX_ASPECT_RATIO, ImageError, check_aspect_ratio  # noqa: F401 (re-exported)
from .files import not_a_file

# 250 megapixels: above the largest phone sensors (200 MP) and a full-page scan at 1200 dpi (140 MP), yet a
# 20000 x 20000 px file of a few kB (a "decompression bomb") is refused before it takes 1.2 GB to decode and ~5 GB
# in the tiler's first float32 resize. Raise it with open_image(max_image_pixels=...) or --max-image-pixels.
MAX_IMAGE_PIXELS = 250_000_000
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")  # how PIL opens 16-bit greyscale PNG and TIFF
JPEG_END = b"\xff\xd9"  # the end-of-image marker; PIL appends it to a truncated JPEG so libjpeg finishes it


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
    if image.mode == "HSV":  # older PIL versions copy H, S, V into R, G, B
        return _hsv_to_rgb(np.asarray(image))
    if image.mode == "LAB":  # older PIL versions copy L, a, b into R, G, B; newer ones do this
        return _lab_to_rgb(image)
    if image.mode == "P" and isinstance(image.info.get("transparency"), bytes):
        # convert('RGB') ignores this transparency but warns that RGBA would keep it; the warning does not apply
        # here, and silencing it would change the process-wide warning filters.
        image = image.copy()
        del image.info["transparency"]
    try:
        # Like the official code: convert('RGB') drops alpha WITHOUT compositing (a transparent pixel keeps
        # its stored colour, often black); L and P expand to RGB; CMYK and YCbCr go through PIL's conversion.
        return np.array(image.convert("RGB"))
    except ValueError as e:  # a mode PIL cannot convert, e.g. "La"
        raise ImageError(f"a {image.mode}-mode image cannot be converted to RGB ({e}); save it as RGB first") from None


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """uint8 HSV [H, W, 3] (each 0..255) -> uint8 RGB, the standard hexcone formula (Python's colorsys)."""
    h, s, v = (hsv[..., k].astype(np.float64) / 255 for k in range(3))
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.astype(np.int64) % 6
    r = np.choose(sector, [v, q, p, p, t, v])
    g = np.choose(sector, [t, v, v, q, p, p])
    b = np.choose(sector, [p, p, t, v, v, q])
    return np.clip(np.round(np.stack([r, g, b], axis=-1) * 255), 0, 255).astype(np.uint8)


def _lab_to_rgb(image: Image.Image) -> np.ndarray:
    """CIELAB -> sRGB through littleCMS, as newer PIL versions do; refused where PIL was built without it."""
    try:
        from PIL import ImageCms
        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                            "LAB", "RGB")
        return np.array(ImageCms.applyTransform(image, transform))
    except (ImportError, OSError, ValueError) as e:  # ImageCms.PyCMSError is an OSError
        raise ImageError(f"a LAB-mode image needs PIL's colour management (littleCMS) to become RGB, which is "
                         f"not available ({e}); save the image as RGB first") from None


def _open_unchecked(fp, path: Path) -> Image.Image:
    """What `Image.open` does (try each registered format on the file's first bytes), minus its size check.

    That check reads the process-wide `Image.MAX_IMAGE_PIXELS`; `_decode` applies the caller's limit instead.
    """
    prefix = fp.read(16)
    Image.preinit()  # the common formats first, as Image.open does; then every plugin
    tried: set[str] = set()
    for load_plugins in (lambda: None, Image.init):
        load_plugins()
        for format_id in [f for f in Image.ID if f not in tried]:
            tried.add(format_id)
            factory, accept = Image.OPEN[format_id]
            accepted = not accept or accept(prefix)
            if not accepted or isinstance(accepted, str):  # a str is PIL's "almost, but no" note
                continue
            fp.seek(0)
            try:
                return factory(fp, str(path))
            except (SyntaxError, IndexError, TypeError, struct.error):  # not this format after all
                continue
    raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}")


def _load_first_frame(image: Image.Image, path: Path, allow_truncated: bool) -> Image.Image:
    """Decode the pixels. A truncated file raises TruncatedImageError, or when allowed is filled in as PIL's
    LOAD_TRUNCATED_IMAGES would (the rows decoded so far, the rest black; a JPEG finished by libjpeg)."""
    try:
        image.load()
        return image
    except OSError as e:
        if "truncated" not in str(e):
            raise
        if not allow_truncated:
            raise TruncatedImageError(
                f"{path}: the file is truncated (an interrupted download or copy?); get it again, or accept it "
                "with the missing part filled in: --allow-truncated (open_image(path, allow_truncated=True))"
            ) from None
    warnings.warn(f"{path}: the file is truncated; the missing part is filled in", stacklevel=4)
    if image.format in ("JPEG", "MPO"):  # PIL ends the data with an end-of-image marker: libjpeg then completes
        finished = _open_unchecked(io.BytesIO(path.read_bytes() + JPEG_END), path)  # the picture (grey) itself
        try:
            finished.load()
            return finished
        except OSError:
            pass  # keep the rows decoded before the end, below
    image.tile = []  # the decoder stopped where the data did; what it wrote is kept, the rest stays zero
    return image


def _decode(path: Path, max_pixels: int | None, allow_truncated: bool) -> Image.Image:
    """Read the header, check the size, decode the first frame, apply EXIF orientation. Errors -> ImageError."""
    try:
        with open(path, "rb") as fp:
            image = _open_unchecked(fp, path)
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
            image = _load_first_frame(image, path, allow_truncated)
            return ImageOps.exif_transpose(image)  # a new, loaded image: usable after the file is closed
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read (PNG, JPEG, WebP, GIF, ...)") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied; make the file readable") from None
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, ... on damaged data
        raise ImageError(f"{path}: the image could not be decoded ({type(e).__name__}: {e}); "
                         "the file may be damaged") from None


def open_image(path: str | Path, allow_truncated: bool = False,
               max_image_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file as a viewer shows it: EXIF orientation applied, pixels loaded now (errors surface here).

    allow_truncated: accept a file that ends early; PIL fills in the missing part (and we warn).
    max_image_pixels: refuse larger images, judged from the header before decoding (None: no limit).
    """
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise ImageError(f"{path}: {IMAGE_PATH_PROBLEMS.get(problem, problem)}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); did a download or copy fail?")
    # Departs from the official code, which fills in a truncated file without a word: we ask first.
    return _decode(path, max_image_pixels, allow_truncated)


IMAGE_PATH_PROBLEMS = {"no such file": "no such image file", "a folder, not a file": "a folder, not an image file"}
