"""rope.py, decoder.py, model.logits: the language path against the official golden logits."""

import pytest
import torch
from conftest import CASES, assert_close, case_id, case_images, golden

from minivlm.core.decoder import embed_tokens
from minivlm.core.rope import apply_rope, rope_angles


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_logits_at_stored_positions(vlm, case):
    g, name = golden(), case["name"]
    logits = vlm.logits(vlm.preprocess(case["prompt"], case_images(case)))
    assert logits.dtype == torch.float32 and logits.shape == (case["seq_len"], vlm.cfg.text.embedding_size)
    assert_close(logits[g[name + ".logits.positions"]], g[name + ".logits"], "logits")


def test_image_tokens_read_the_additional_rows(vlm):
    w = vlm.weights
    n_base = w["model.language_model.embedding.embedding"].shape[0]
    x = embed_tokens(torch.tensor([[0, n_base - 1, n_base, n_base + 5]]), w)
    assert torch.equal(x[0, 1], w["model.language_model.embedding.embedding"][n_base - 1])
    assert torch.equal(x[0, 2], w["model.language_model.embedding.new_embedding"][0])
    assert torch.equal(x[0, 3], w["model.language_model.embedding.new_embedding"][5])


def test_rope_rotates_pairs_k_and_k_plus_half():
    """Position p rotates channel pair (k, k + D/2) by p·θ^(-2k/D); relative positions are what q·k sees."""
    head_dim, theta = 8, 1e6
    cos, sin = rope_angles(torch.tensor([[3]]), head_dim, theta)
    x = torch.zeros(1, 1, 1, head_dim)
    x[..., 1] = 1.0  # pair (1, 5)
    rotated = apply_rope(x, cos, sin)[0, 0, 0]
    angle = 3 * theta ** (-2 * 1 / head_dim)
    assert torch.allclose(rotated[1], torch.tensor(angle).cos()) and torch.allclose(rotated[5], torch.tensor(angle).sin())
    q, k = torch.randn(1, 1, 1, head_dim), torch.randn(1, 1, 1, head_dim)
    dots = []
    for shift in (0, 7):
        cq, sq = rope_angles(torch.tensor([[5 + shift]]), head_dim, theta)
        ck, sk = rope_angles(torch.tensor([[2 + shift]]), head_dim, theta)
        dots.append((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())
    assert torch.allclose(dots[0], dots[1], atol=1e-5)


def test_rope_in_float32_for_bfloat16_inputs():
    x = torch.randn(1, 2, 4, 16).bfloat16()
    cos, sin = rope_angles(torch.arange(4)[None], 16, 1e6)
    expected = (x.float() * cos + torch.cat([-x.float()[..., 8:], x.float()[..., :8]], -1) * sin).bfloat16()
    assert torch.equal(apply_rope(x, cos, sin), expected)  # one rounding, after the float32 rotation
