"""rope.py: rotary positions, computed in float32 as the official RotaryEmbedding does."""

import torch

from minivlm.core.rope import apply_rope, rope_angles


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


def test_inverse_frequencies_as_the_official_code_computes_them():
    """1 / θ^(2k/d) in float32 (the official RotaryEmbedding), not θ^(-2k/d): at the release's θ = 1e6 and d = 128
    the two differ by one float32 step in some frequencies, visible in cos/sin at long positions."""
    head_dim, theta = 128, 1e6
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    official = 1.0 / (theta**exponents)
    other = theta ** -exponents
    assert (official != other).any()  # the two formulas really differ in float32
    position = 1773
    cos, sin = rope_angles(torch.tensor([[position]]), head_dim, theta)
    expected = (torch.tensor(float(position)) * official)
    assert torch.equal(cos[0, 0, 0, :64], expected.cos()) and torch.equal(sin[0, 0, 0, 64:], expected.sin())
