"""Property-based tests of the tiler: any image from 1x1 to 6000x6000 px, with any max_crops from 1 to 12,
either tiles consistently or raises the one documented error (aspect ratio over 200).

Hypothesis draws the sizes; `derandomize=True` makes every run draw the same ones, so CI is reproducible.
`token_counts` needs no pixels, so it is checked on many sizes; the full `tile_image` runs on fewer, with
all-black pixels (the layout does not depend on their values; the pixel maths has its golden tests).
"""



import numpy as np
import pytest
import torch
from conftest import FIXTURE_DIR
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from minivlm.core.config import with_max_crops
from minivlm.core.tiler import ImageTokenIds, tile_image, token_counts
from minivlm.formats.config_json import load_config
from minivlm.formats.image_io import MAX_ASPECT_RATIO, ImageError

BASE = load_config(FIXTURE_DIR)
IDS = ImageTokenIds(start=1, end=2, patch=3, col=4)  # any four distinct ids
SIDE = st.integers(1, 6000)
MAX_CROPS = st.integers(1, 12)
REPRODUCIBLE = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


def too_elongated(width: int, height: int) -> bool:
    return max(width, height) > MAX_ASPECT_RATIO * min(width, height)


# Edges always tried: the aspect-ratio limit on both sides of 200, the smallest and largest images, a side of
# exactly the 112 px margin (its tiling scale divides by zero), 1 px strips.
EDGES = [(6000, 30, 12), (6000, 29, 12), (30, 6000, 1), (1, 1, 1), (1, 1, 12), (200, 1, 12), (201, 1, 12),
         (6000, 6000, 12), (6000, 6000, 1), (1008, 112, 12), (112, 112, 7)]


def edges(test):
    for width, height, max_crops in EDGES:
        test = example(width=width, height=height, max_crops=max_crops)(test)
    return test


@settings(max_examples=1000, **REPRODUCIBLE)
@given(width=SIDE, height=SIDE, max_crops=MAX_CROPS)
@edges
def test_token_counts(width, height, max_crops):
    cfg = with_max_crops(BASE, max_crops)
    if too_elongated(width, height):
        with pytest.raises(ImageError, match="aspect ratio"):
            token_counts(width, height, cfg)
        return
    n = token_counts(width, height, cfg)
    h, w = n.resized_hw
    assert h > 0 and w > 0 and h % cfg.vision.patch_size == 0 and w % cfg.vision.patch_size == 0
    rows, cols = n.tiling
    assert 1 <= rows * cols <= max_crops and n.crops == 1 + rows * cols <= max_crops + 1
    assert n.llm_positions == n.pooled_used + n.layout_tokens
    assert n.pooled_used <= n.pooled_computed == n.crops * 196
    assert n.vit_tokens == n.crops * 729


@settings(max_examples=30, **REPRODUCIBLE)
@given(width=SIDE, height=SIDE, max_crops=MAX_CROPS)
@edges
def test_tile_image_layout(width, height, max_crops):
    assume(not too_elongated(width, height))
    cfg = with_max_crops(BASE, max_crops)
    tiled = tile_image(np.zeros((height, width, 3), np.uint8), cfg, IDS)
    n = token_counts(width, height, cfg)
    tokens = tiled.token_ids

    # token_counts agrees with what tile_image produced
    assert (n.resized_hw, n.tiling, n.crops) == (tiled.resized_hw, tiled.tiling, len(tiled.patches))
    assert n.crops <= max_crops + 1
    assert tiled.patches.shape == (n.crops, 729, 588) and tiled.image_masks.shape == (n.crops, 729)
    assert n.llm_positions == len(tokens) and n.pooled_used == int((tokens == IDS.patch).sum())

    # image_input_idx: every kept cell points at its own <im_patch>, and every <im_patch> gets one cell
    positions = tiled.patch_positions
    assert positions.shape == (n.crops, 196)
    assert (positions[positions < 0] == -1).all()
    kept = positions[positions >= 0]
    assert len(kept.unique()) == len(kept)
    assert int(kept.max()) < len(tokens)
    assert torch.equal(kept.sort().values, (tokens == IDS.patch).nonzero().flatten())
