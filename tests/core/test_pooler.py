"""pooler.py: the connector (pad embeddings, 2x2 attention pooling, projector) against the official golden tensors."""

import pytest
import torch
from conftest import (
    IMAGE_CASES,
    assert_close,
    assert_sum_close,
    case_id,
    case_images,
    features_for,
    golden,
)

from minivlm.core.batch import collate
from minivlm.core.pooler import (
    add_pad_embeddings,
    attention_pool,
    connector,
    to_windows,
)
from minivlm.core.vit import vit_features


@pytest.mark.parametrize("case", IMAGE_CASES, ids=case_id)
def test_connector_output(vlm, case):
    g, name = golden(), case["name"]
    out = vlm.encode_images(collate([vlm.preprocess(case["prompt"], case_images(case))]))
    assert out.shape == (case["token_counts"]["n_crops"], 196, vlm.cfg.text.hidden_size)
    if name + ".connector_out" in g:
        assert_close(out, g[name + ".connector_out"], "connector_out")
    else:
        assert_sum_close(out, g[name + ".connector_out.crop_sum"], "connector_out sum")


def test_pooled_features_before_the_projector(vlm):
    case = next(c for c in IMAGE_CASES if c["name"] == "single_tile_378")
    batch, features = features_for(vlm, case)
    cfg = vlm.cfg.vision
    padded = add_pad_embeddings(features, batch["image_masks"], vlm.weights["model.vision_model.vl_connector.pad_embed"])
    pooled = attention_pool(to_windows(padded, cfg.grid, cfg.pool_h, cfg.pool_w), vlm.weights, cfg)
    assert_close(pooled.view(len(features), 196, -1), golden()["single_tile_378.pooled_features"], "pooled_features")


def test_last_tile_gets_the_partial_pad_embedding(vlm):
    """cases.json mask_probe: with every mask set to 1, only crop 12 of 13 changes (the upstream off-by-one)."""
    case = next(c for c in IMAGE_CASES if c["name"] == "landscape_1176x910")
    batch = collate([vlm.preprocess(case["prompt"], case_images(case))])
    as_shipped = vlm.encode_images(batch)
    all_ones = vlm.encode_images({**batch, "image_masks": torch.ones_like(batch["image_masks"])})
    changed = [i for i in range(len(as_shipped)) if not torch.equal(as_shipped[i], all_ones[i])]
    assert changed == [12]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pad_embeddings_match_the_official_float32_sum(dtype):
    """Masks of every kind (1 real, 0 padding, -1 and 0.5 partial): the official connector's sum over every patch,
    in float32 and cast back once (SPEC.md), though add_pad_embeddings only sums the patches whose mask is not 1."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 729, 16, generator=generator).to(dtype)
    pad_embed = torch.randn(2, 16, generator=generator).to(dtype)
    masks = torch.ones(3, 729)
    masks[1] = -1
    masks[2, :100], masks[2, 100:200] = 0, 0.5
    all_pad, partial = (masks == 0).float()[..., None], ((masks < 1) & (masks != 0)).float()[..., None]
    official = (features.float() + pad_embed[0].float() * all_pad + pad_embed[1].float() * partial).to(dtype)
    padded = add_pad_embeddings(features, masks, pad_embed)
    assert padded.dtype == dtype and torch.equal(padded, official)
    assert torch.equal(padded[0], features[0]) and not torch.equal(padded[1], features[1])


def test_connector_runs_without_grad_tricks(vlm):
    """Plain tensor functions: autograd flows through the whole vision path (the training code relies on it)."""
    weights = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in vlm.weights.items()}
    case = IMAGE_CASES[0]
    batch = vlm.preprocess(case["prompt"], case_images(case))
    out = connector(vit_features(batch["images"], weights, vlm.cfg.vision), batch["image_masks"], weights, vlm.cfg.vision)
    out.square().mean().backward()
    assert weights["model.vision_model.patch_embed.proj.weight"].grad.abs().sum() > 0
