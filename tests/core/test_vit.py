"""patch_embed.py and vit.py: ViT features against the official golden tensors."""

import pytest
import torch
from conftest import (
    IMAGE_CASES,
    assert_close,
    assert_sum_close,
    assert_sumsq_close,
    case_id,
    features_for,
    golden,
)

from minivlm.core.vit import vit_features


@pytest.mark.parametrize("case", IMAGE_CASES, ids=case_id)
def test_vit_features(vlm, case):
    g, name = golden(), case["name"]
    _, features = features_for(vlm, case)  # [crops, 729, 64]: blocks 7 and 1 of the tiny ViT
    if name + ".vit_features" in g:
        assert_close(features, g[name + ".vit_features"], "vit_features")
    if name + ".vit_features.rows" in g:
        crops, rows = g[name + ".vit_features.rows_crop_index"], g[name + ".vit_features.row_index"]
        assert_close(features[crops][:, rows], g[name + ".vit_features.rows"], "vit_features rows")
    if name + ".vit_features.crop_sumsq" in g:
        assert_sumsq_close(features, g[name + ".vit_features.crop_sumsq"], "vit_features sumsq")
    if name + ".vit_features.crop_sum" in g:
        assert_sum_close(features, g[name + ".vit_features.crop_sum"], "vit_features sum")
    assert any(name + ".vit_features" + suffix in g for suffix in ("", ".rows", ".crop_sum"))


def test_all_minus_one_crop_is_zeroed(vlm):
    """A crop whose pixels are all -1 (padding, or a black tile) gives zero ViT features, as upstream."""
    patches = torch.stack([torch.full((729, 588), -1.0), torch.zeros(729, 588)])
    features = vit_features(patches, vlm.weights, vlm.cfg.vision)
    assert features[0].abs().max() == 0 and features[1].abs().max() > 0
