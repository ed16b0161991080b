"""Rotary position embedding (RoPE) for the Qwen3 decoder: θ = 1e6, over the whole 128-dim head.

Where it sits: inside the decoder's attention (pixels -> ... -> pooler -> **decoder** -> sampler).
Paper: architecture, the language model (Qwen3's RoPE). Mirrors the official `RotaryEmbedding` (blocks_jvlm.py).

Each pair of channels (k, k + 64) is rotated by the angle position / θ^(2k/128). The angles, cos and sin are
computed in float32, and q/k are rotated in float32 and rounded back once: the official Jina-VLM code does
that (stock Hugging Face Qwen3 rotates in bfloat16), and in bfloat16 the difference is visible.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_angles(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """positions [B, L] (int) -> cos, sin [B, 1, L, head_dim] in float32, ready to broadcast over heads."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    # 1 / θ^(2k/d), written as the official code writes it: θ^(-2k/d) rounds 24 of the 64 frequencies to the
    # neighbouring float32, which moves cos/sin by up to 1.2e-4 at position 1,773.
    inv_freq = 1.0 / (theta**exponents)
    angles = positions.float()[..., None] * inv_freq  # [B, L, head_dim / 2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, L, head_dim]: the same angle for k and k + 64
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(first half, second half) -> (-second half, first half): the 90° turn of each (k, k + 64) pair."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, heads, L, head_dim] in any dtype; rotated in float32, returned in x's dtype."""
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)
