"""Bad images: files that are not images, truncated, bombs, odd modes, animations (formats/image_io.py, core/tiler.py)."""

import warnings

import numpy as np
import pytest
import torch
from bad_input import CFG, RGB_378, encoded, noise, png_header_only, truncated, write
from conftest import FIXTURE_DIR
from PIL import Image, ImageFile

from minivlm.core.tiler import smart_resize, tile_image
from minivlm.formats.image_io import (
    ImageError,
    TruncatedImageError,
    open_image,
    to_rgb_array,
)


def test_not_an_image_empty_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="not an image file PIL can read"):
        open_image(write(tmp_path / "notes.png", b"these are my notes, not a picture"))
    with pytest.raises(ImageError, match=r"the file is empty \(0 bytes\)"):
        open_image(write(tmp_path / "empty.jpg", b""))
    with pytest.raises(ImageError, match="a folder, not an image file"):
        open_image(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_refused_unless_allowed(tmp_path, fmt):
    path = truncated(tmp_path / f"cut.{fmt.lower()}", fmt)
    with pytest.raises(TruncatedImageError, match="truncated.*--allow-truncated"):
        open_image(path)
    with pytest.warns(UserWarning, match="truncated; the missing part is filled in"):
        image = open_image(path, allow_truncated=True)
    assert image.size == (64, 64)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # scoped to the call, not left switched on
    with pytest.raises(ImageError, match="could not be decoded.*truncated"):  # a lazily opened PIL image
        to_rgb_array(Image.open(path))


def test_decompression_bomb_refused_from_the_header(tmp_path):
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=r"20000x13000 px is 260 megapixels, over the limit of 250.*--max-image-pix"):
        open_image(png_header_only(tmp_path / "bomb.png", 20000, 13000))
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's own limit is switched off for the call only
    path = write(tmp_path / "photo.png", encoded(noise(100, 100), "PNG"))
    with pytest.raises(ImageError, match="0.01 megapixels, over the limit of 0.005"):
        open_image(path, max_image_pixels=5000)
    assert open_image(path, max_image_pixels=10_000).size == (100, 100)  # the limit can be raised


def test_aspect_ratio_refused_before_decoding(tmp_path):
    path = write(tmp_path / "strip.png", encoded(noise(2, 500), "PNG"))
    with pytest.raises(ImageError, match=r"strip.png: aspect ratio 250.0 \(500x2 px\) exceeds the limit of 200"):
        open_image(path)


@pytest.mark.parametrize("h, w", [(1, 1), (1, 3), (3, 1), (2, 2), (13, 13), (1, 200)])
def test_tiny_images_tile(vlm, h, w):
    tiled = tile_image(np.full((h, w, 3), 77, np.uint8), CFG, vlm.tokenizer.image_ids)
    # Departs from the official code, which reads arrays 1 or 3 px tall as channels-first:
    # 1x1 gives 56x56 here, 42x98 there.
    assert tiled.resized_hw == smart_resize(h, w, CFG) and tiled.tiling == (1, 1)
    assert torch.allclose(tiled.patches, torch.tensor(-1 + 77 / 255 * 2))  # one colour stays one colour


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    path = write(tmp_path / "depth.png", encoded(Image.fromarray(values), "PNG"))
    image = open_image(path)
    assert image.mode == "I;16"
    assert to_rgb_array(image)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert np.array(image.convert("RGB"))[0, 2, 0] == 255  # what PIL's convert (and the official code) gives


def test_cmyk_and_greyscale_jpeg(tmp_path):
    cmyk = open_image(write(tmp_path / "print.jpg", encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")))
    grey = open_image(write(tmp_path / "scan.jpg", encoded(Image.new("L", (16, 16), 100), "JPEG")))
    assert (cmyk.mode, grey.mode) == ("CMYK", "L")
    assert np.abs(to_rgb_array(cmyk).astype(int) - [255, 0, 0]).max() <= 3  # red
    assert np.abs(to_rgb_array(grey).astype(int) - 100).max() <= 1


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    path = write(tmp_path / "icon.png", encoded(image, "PNG", transparency=bytes([255, 128])))  # half transparent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's "should be converted to RGBA" advice is not shown
        pixels = to_rgb_array(open_image(path))
    assert (pixels == [0, 0, 255]).all()  # transparent pixels keep their colour: convert('RGB'), as upstream


def test_rgba_from_a_path_drops_alpha_like_upstream():
    path = FIXTURE_DIR / "images" / "rgba_500x300.png"
    assert np.array_equal(to_rgb_array(path), np.array(Image.open(path))[..., :3])


def test_paths_work_like_pil_images(vlm):
    from_path = vlm.preprocess("What is this?", [RGB_378])
    from_pil = vlm.preprocess("What is this?", [Image.open(RGB_378)])
    assert all(torch.equal(from_path[k], from_pil[k]) for k in from_pil)


def test_exif_orientation_applied_for_paths_only(tmp_path):
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = write(tmp_path / "phone.jpg", encoded(stored, "JPEG", exif=exif, quality=95))
    shown = to_rgb_array(open_image(path))
    assert shown.shape == (40, 20, 3)  # portrait, as a viewer shows it
    assert shown[5, 10, 0] > 200 and shown[35, 10, 2] > 200  # red on top, blue below
    assert to_rgb_array(Image.open(path)).shape == (20, 40, 3)  # a PIL image is used as given, as the official processor does


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_gives_the_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (20, 10), color) for color in ("red", "green", "blue")]
    path = write(tmp_path / f"anim.{fmt.lower()}", encoded(frames[0], fmt, save_all=True, append_images=frames[1:]))
    with pytest.warns(UserWarning, match="using the first frame of 3"):
        pixels = to_rgb_array(open_image(path))
    assert np.abs(pixels.astype(int) - [255, 0, 0]).max() <= 3


@pytest.mark.parametrize("image, message", [
    (Image.new("I", (4, 4)), "I-mode image .* no standard brightness range"),
    (Image.new("F", (4, 4)), "F-mode image .* no standard brightness range"),
    (torch.zeros(4, 4, 3, dtype=torch.uint8), "got Tensor"),
])
def test_unsupported_in_memory_images(image, message):
    with pytest.raises(ImageError, match=message):
        to_rgb_array(image)


def test_which_image_is_bad_is_said(vlm):
    with pytest.raises(ImageError, match="image 2 of 2: .*aspect ratio 250.0"):
        vlm.preprocess("", [RGB_378, np.zeros((2, 500, 3), np.uint8)])
