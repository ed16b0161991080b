"""The tiler against the official image processor's (JinaVLMImageProcessor) golden outputs in tests/fixtures/jvlm-tiny."""

import hashlib
import json
from functools import cache

import numpy as np
import pytest
import torch
from conftest import FIXTURE_DIR
from PIL import Image
from safetensors.torch import load_file

from minivlm.core.tiler import (
    ImageError,
    ImageTokenIds,
    choose_tiling,
    crop_boxes,
    smart_resize,
    tile_image,
    token_counts,
    unpatchify,
)
from minivlm.formats.config_json import load_config
from minivlm.formats.image_io import to_rgb_array

FIXTURES = FIXTURE_DIR
CASES = json.loads((FIXTURES / "cases.json").read_text())
IMAGE_CASES = [c for c in CASES["cases"] if c["images"]]
CFG = load_config(FIXTURES)
_SPECIAL = CASES["tokenizer"]["special_token_ids"]
IDS = ImageTokenIds(start=_SPECIAL["<im_start>"], end=_SPECIAL["<im_end>"], patch=_SPECIAL["<im_patch>"],
                    col=_SPECIAL["<im_col>"])


@cache
def golden() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "golden.safetensors")


@cache
def tiled(file: str):
    return tile_image(to_rgb_array(Image.open(FIXTURES / file)), CFG, IDS)


def case_images(case: dict) -> list[tuple[dict, object, int, int]]:
    """Per image: (cases.json entry, TiledImage, first crop in the case's crop stack, image block offset)."""
    input_ids = golden()[f"{case['name']}.input_ids"][0]
    starts = (input_ids == IDS.start).nonzero().flatten().tolist()  # two <im_start> per image
    out, first_crop = [], 0
    for k, info in enumerate(case["images"]):
        t = tiled(info["file"])
        out.append((info, t, first_crop, starts[2 * k]))
        first_crop += len(t.patches)
    return out


def all_crops(case: dict) -> torch.Tensor:
    return torch.cat([t.patches for _, t, _, _ in case_images(case)])  # [crops, 729, 588]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c["name"])
def test_crops_bit_exact(case):
    crops = all_crops(case)
    expected = case["images_tensor"]["crop_sha256_float32"]
    assert [hashlib.sha256(c.numpy().tobytes()).hexdigest() for c in crops] == expected
    g = golden()
    assert crops.dtype == torch.float32 and crops.min() >= -1 and crops.max() <= 1
    torch.testing.assert_close(crops.double().sum((1, 2)), g[f"{case['name']}.images.crop_sum"], rtol=1e-6, atol=0)
    torch.testing.assert_close((crops.double() ** 2).sum((1, 2)), g[f"{case['name']}.images.crop_sumsq"],
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("threads", [1, 3, 16])
def test_crops_bit_exact_at_any_thread_count(threads):
    """PyTorch's bilinear resize rounds differently on one thread when it gets all three planes at once; the
    tiler resizes plane by plane, so a 1-thread run (the CLI's default for small models) keeps the pixels."""
    case = next(c for c in IMAGE_CASES if c["name"] == "landscape_1176x910")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        crops = tile_image(to_rgb_array(Image.open(FIXTURES / case["images"][0]["file"])), CFG, IDS).patches
    finally:
        torch.set_num_threads(before)
    assert [hashlib.sha256(c.numpy().tobytes()).hexdigest() for c in crops] == case["images_tensor"]["crop_sha256_float32"]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c["name"])
def test_stored_rows_exact(case):
    crops, g, name = all_crops(case), golden(), case["name"]
    row_index = g[f"{name}.images.row_index"]
    if f"{name}.images.rows" in g:
        for k, crop in enumerate(g[f"{name}.images.rows_crop_index"].tolist()):
            assert torch.equal(crops[crop, row_index], g[f"{name}.images.rows"][k])
    # Cases whose rows repeat another case's refer to them, e.g. "single_tile_378.images.rows crop 0".
    for crop, ref in case["images_tensor"]["rows_not_repeated_identical_to"].items():
        ref_field, ref_crop = ref.split(" crop ")
        ref_k = g[ref_field.replace(".rows", ".rows_crop_index")].tolist().index(int(ref_crop))
        assert torch.equal(crops[int(crop), row_index], g[ref_field][ref_k])


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c["name"])
def test_geometry_masks_tokens_positions(case):
    g, name = golden(), case["name"]
    input_ids, masks, idx = g[f"{name}.input_ids"][0], g[f"{name}.image_masks"][0], g[f"{name}.image_input_idx"][0]
    for info, t, first, offset in case_images(case):
        crops = slice(first, first + len(t.patches))
        assert list(t.resized_hw) == info["smart_resize_hw"]
        assert list(t.tiling) == info["tiling_rows_cols"]
        assert len(t.patches) == info["n_crops"]
        assert t.image_masks.dtype == torch.int64 and torch.equal(t.image_masks, masks[crops])
        assert torch.equal(t.token_ids, input_ids[offset:offset + len(t.token_ids)])
        expected = idx[crops]
        assert torch.equal(t.patch_positions < 0, expected < 0)
        assert (t.patch_positions[t.patch_positions < 0] == -1).all()
        kept = expected >= 0
        assert torch.equal(t.patch_positions[kept], expected[kept] - offset)
        assert (t.token_ids[t.patch_positions[kept]] == IDS.patch).all()


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c["name"])
def test_token_counts(case):
    total = dict.fromkeys(["crops", "vit", "computed", "used", "layout", "positions"], 0)
    for info, t, _, _ in case_images(case):
        n = token_counts(info["width"], info["height"], CFG)
        assert (n.resized_hw, n.tiling, n.crops) == (t.resized_hw, t.tiling, len(t.patches))
        assert n.llm_positions == len(t.token_ids) == n.pooled_used + n.layout_tokens
        assert n.pooled_used == int((t.token_ids == IDS.patch).sum()) == int((t.patch_positions >= 0).sum())
        assert n.vit_tokens == t.patches.shape[0] * t.patches.shape[1]
        for key, value in zip(total, [n.crops, n.vit_tokens, n.pooled_computed, n.pooled_used, n.layout_tokens,
                                      n.llm_positions]):
            total[key] += value
    c = case["token_counts"]
    assert total == {"crops": c["n_crops"], "vit": c["vit_patch_tokens"], "computed": c["connector_outputs"],
                     "used": c["<im_patch>"], "layout": c["<im_col>"] + c["<im_start>"] + c["<im_end>"],
                     "positions": c["image_tokens_total"]}


# The release's token arithmetic for common sizes (worked out from the official processor): input W x H, smart_resize H x W, tiling, image tokens, <im_patch>, ViT tokens, pooled computed.
RELEASE_TABLE = [
    ((378, 378), (378, 378), (1, 1), 424, 392, 1458, 392),
    ((1176, 910), (868, 1134), (3, 4), 1744, 1692, 9477, 2548),
    ((910, 1176), (1134, 868), (4, 3), 1754, 1692, 9477, 2548),
    ((4000, 3000), (854, 1148), (3, 4), 1744, 1692, 9477, 2548),
    ((100, 800), (798, 98), (1, 1), 424, 392, 1458, 392),
    ((640, 480), (476, 644), (2, 2), 814, 772, 3645, 980),
    ((500, 300), (294, 504), (1, 2), 564, 532, 2187, 588),
    ((300, 300), (294, 294), (1, 1), 424, 392, 1458, 392),
]


@pytest.mark.parametrize("wh, resized, tiling, tokens, patches, vit, computed", RELEASE_TABLE)
def test_spec_table(wh, resized, tiling, tokens, patches, vit, computed):
    w, h = wh
    assert smart_resize(h, w, CFG) == resized
    assert choose_tiling(*resized, CFG) == tiling
    n = token_counts(w, h, CFG)
    assert (n.llm_positions, n.pooled_used, n.vit_tokens, n.pooled_computed) == (tokens, patches, vit, computed)


@pytest.mark.parametrize("h, w", [(98, 98), (798, 98), (98, 1400), (14, 500), (56, 56)])
def test_side_at_most_98_gives_one_tile(h, w):
    assert choose_tiling(h, w, CFG) == (1, 1)


def test_side_of_exactly_112_lets_the_other_side_decide():
    # h - 112 = 0: that side's scale is +inf. Width 1008 - 112 = 896 needs 4 columns of 266 px (1064 >= 896),
    # and (1, 4) is the first 4-tile candidate in (tiles, rows) order.
    assert smart_resize(112, 1008, CFG) == (112, 1008)
    assert choose_tiling(112, 1008, CFG) == (1, 4)
    assert choose_tiling(112, 500, CFG) == (1, 2)  # 388 px need 2 columns
    t = tile_image(np.zeros((112, 1008, 3), np.uint8), CFG, IDS)
    assert t.tiling == (1, 4) and t.patches.shape == (5, 729, 588)


def test_aspect_ratio_over_200_raises():
    with pytest.raises(ImageError, match="250"):
        tile_image(np.zeros((2, 500, 3), np.uint8), CFG, IDS)
    with pytest.raises(ImageError, match="201"):
        smart_resize(1, 201, CFG)
    assert smart_resize(1, 200, CFG)  # exactly 200 is allowed


def test_thin_strip_uses_true_size():
    # Departs from the official code, which reads a 3 px tall image as channels-first and gives (728, 14).
    assert tile_image(np.zeros((3, 500, 3), np.uint8), CFG, IDS).resized_hw == (14, 728)


def test_to_rgb_array():
    rgba = Image.open(FIXTURES / "images" / "rgba_500x300.png")
    assert np.array_equal(to_rgb_array(rgba), np.array(rgba)[..., :3])  # alpha dropped, not composited
    assert to_rgb_array(Image.new("L", (4, 2), 7)).shape == (2, 4, 3)
    for bad in [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), "image.png"]:
        with pytest.raises(ImageError):
            to_rgb_array(bad)


def test_unpatchify_undoes_the_patches():
    """The crops rebuilt from the patches are the resized image itself (a 378x378 image is its own single tile)."""
    pixels = np.random.default_rng(0).integers(0, 256, (378, 378, 3), dtype=np.uint8)
    tiled = tile_image(pixels, CFG, IDS)
    crops = unpatchify(tiled.patches, CFG.vision.patch_size)  # [crops, 3, 378, 378]
    assert crops.shape == (2, 3, 378, 378)
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 * 2 - 1  # the model's [-1, 1] range
    torch.testing.assert_close(crops[0], expected, rtol=0, atol=1e-6)  # the thumbnail: no resize needed
    assert torch.equal(crops[1], crops[0])


@pytest.mark.parametrize("width, height", [(1176, 910), (900, 300), (400, 1200), (378, 378)])
def test_crop_boxes_say_where_each_crop_shows_the_image(width, height):
    """An image whose red channel rises left to right and green top to bottom: each crop's centre pixel shows
    the gradient at the centre of its `crop_boxes` box (the bilinear resizes keep a linear ramp, to rounding)."""
    x = (np.arange(width) + 0.5) / width  # [W] each pixel centre's fraction of the width
    y = (np.arange(height) + 0.5) / height
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.round(x * 255)[None, :]
    pixels[..., 1] = np.round(y * 255)[:, None]
    t = tile_image(pixels, CFG, IDS)
    boxes = crop_boxes(width, height, CFG)
    assert len(boxes) == len(t.patches) == 1 + t.tiling[0] * t.tiling[1]
    assert boxes[0] == (0.0, 0.0, 1.0, 1.0)
    crops = (unpatchify(t.patches, CFG.vision.patch_size) + 1) / 2 * 255  # [crops, 3, 378, 378]
    mid = CFG.vision.crop_size // 2
    for crop, (top, left, bottom, right) in zip(crops, boxes):
        shown = (crop[0, mid - 1:mid + 1, mid - 1:mid + 1].mean(), crop[1, mid - 1:mid + 1, mid - 1:mid + 1].mean())
        assert shown[0].item() == pytest.approx((left + right) / 2 * 255, abs=1.5)
        assert shown[1].item() == pytest.approx((top + bottom) / 2 * 255, abs=1.5)
    if len(boxes) > 2:  # neighbouring tiles overlap by the margins
        assert boxes[1][3] > boxes[2][1]
