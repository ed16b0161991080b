"""open_image leaves PIL's process-wide settings alone: threads with different options each get their own,
and a truncated file is filled in exactly as PIL's global switch would (formats/image_io.py)."""

import colorsys
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from bad_input import encoded, noise, png_header_only, truncated, write
from PIL import Image, ImageCms, ImageFile

from minivlm.formats.image_io import ImageError, TruncatedImageError, open_image, to_rgb_array

PIL_SETTINGS = lambda: (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)  # noqa: E731


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_concurrent_calls_get_their_own_options(tmp_path):
    cut, photo = truncated(tmp_path / "cut.png"), write(tmp_path / "photo.png", encoded(noise(100, 100), "PNG"))
    before, changes, done = PIL_SETTINGS(), [], threading.Event()

    def watch():
        while not done.is_set():
            if PIL_SETTINGS() != before:
                changes.append(PIL_SETTINGS())

    def strict():
        for _ in range(30):
            with pytest.raises(TruncatedImageError):
                open_image(cut)

    def lenient():
        for _ in range(30):
            assert open_image(cut, allow_truncated=True).size == (64, 64)

    def small_limit():
        for _ in range(30):
            with pytest.raises(ImageError, match="over the limit of 0.005"):
                open_image(photo, max_image_pixels=5000)

    def no_limit():
        for _ in range(30):
            assert open_image(photo, max_image_pixels=None).size == (100, 100)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            for job in [pool.submit(f) for f in (strict, lenient, small_limit, no_limit)]:
                job.result()  # re-raises a thread's failure here
    finally:
        done.set()
        watcher.join()
    assert changes == [] and PIL_SETTINGS() == before


def test_between_pils_limit_and_ours(tmp_path):
    """180 MP: over PIL's own error limit (2 x 89 MP), under ours (250 MP): judged by ours alone."""
    path = png_header_only(tmp_path / "big.png", 13_420, 13_420)  # only a header: decoding stops at once
    with pytest.raises(ImageError) as err:
        open_image(path)
    assert "decompression bomb DOS attack" not in str(err.value)  # PIL's message: its global limit was not used
    with pytest.raises(ImageError, match="180 megapixels, over the limit of 100"):
        open_image(path, max_image_pixels=100_000_000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_filled_in_as_pil_does(tmp_path, fmt):
    path = truncated(tmp_path / f"cut.{fmt.lower()}", fmt)
    with pytest.warns(UserWarning, match="truncated"):
        ours = to_rgb_array(open_image(path, allow_truncated=True))
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # PIL's global switch, in this test only: the reference
    try:
        reference = np.array(Image.open(path).convert("RGB"))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert np.array_equal(ours, reference)


def test_fifo_device_and_unreadable_paths(tmp_path, monkeypatch):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"photo.png: a FIFO \(named pipe\), not a regular file"):
        open_image(fifo)  # would block forever in open()
    with pytest.raises(ImageError, match="/dev/zero: a device file, not a regular file"):
        open_image("/dev/zero")
    with pytest.raises(ImageError, match="no such image file"):
        open_image(tmp_path / "missing.png")
    path = write(tmp_path / "locked.png", encoded(noise(8, 8), "PNG"))
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # tests may run as root, who reads anything
    with pytest.raises(ImageError, match="locked.png: permission denied; make the file readable"):
        open_image(path)


def test_hsv_and_lab_are_converted_not_copied():
    values = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    hsv = Image.frombytes("HSV", (7, 6), values.tobytes())
    expected = np.array([[[round(c * 255) for c in colorsys.hsv_to_rgb(*(px / 255))] for px in row] for row in values])
    assert np.abs(to_rgb_array(hsv).astype(int) - expected).max() <= 1
    lab = Image.frombytes("LAB", (7, 6), values.tobytes())
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    assert np.array_equal(to_rgb_array(lab), np.array(ImageCms.applyTransform(lab, transform)))
    assert not np.array_equal(to_rgb_array(lab), values)  # not the channels copied, as older PIL did


def test_in_memory_transparency_needs_no_warning_filter():
    image = Image.new("P", (2, 2), 0)
    image.putpalette([10, 20, 30] * 256)
    image.info["transparency"] = bytes([0])
    assert (to_rgb_array(image) == [10, 20, 30]).all()
    assert "transparency" in image.info  # the caller's image is left as it was
