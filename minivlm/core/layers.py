"""The few tensor primitives every component shares: linear, the two norms, SwiGLU, attention.

Where it sits: under every box of the diagram (ViT, pooler, decoder). Mirrors the official `LayerNorm`,
`RMSLayerNorm`, `FFN` and the attention of `MHSDPA` (blocks_jvlm.py).

Everything in minivlm is a plain function over tensors taken straight from the checkpoint; these are the
building blocks the ViT (`vit.py`), the connector (`pooler.py`) and the decoder (`decoder.py`) are written in.
Keeping them in one place is what lets each component file read as "the paper's diagram, in code".

`hooks` is the one door for speed-ups that live outside the model (minivlm.accel): a hook gets the same
arguments as the plain function and returns its result, or None to let the plain PyTorch code run. The loader
installs them where they apply; with none installed, everything here is plain PyTorch.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

# linear(x, weight, bias), decode_attention(q [B, Hkv, G, D], k, v, scale), attention(q, k, v, scale, causal) (no
# mask, several queries: the ViT's, a whole prompt's prefill), rms_norm(x, weight, eps), silu_gate(value_gate),
# norm_rope(x, weight, eps, cos, sin) (the decoder's q/k norm then RoPE) and vit_block(x, w, i, cfg) (a whole ViT
# block, `vit.vit_block`'s arguments), swiglu(x, up, down) (the whole gated MLP) and encode_images(w, cfg, images,
# image_masks) (the whole vision half, `generation.encode_images`' arguments): a result, or None = "not mine".
hooks = SimpleNamespace(linear=None, decode_attention=None, attention=None, rms_norm=None, silu_gate=None,
                        norm_rope=None, vit_block=None, swiglu=None, encode_images=None)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x Wᵀ + b, with W stored [out, in] as in nn.Linear."""
    if hooks.linear is not None and (y := hooks.linear(x, weight, bias)) is not None:
        return y
    return F.linear(x, weight, bias)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """The ViT's LayerNorm (mean and variance over the channel axis, affine with bias)."""
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Qwen3's RMSNorm: the statistics in float32, cast back to x's dtype, *then* the weight multiply.

    The order matters in bfloat16 (one rounding before the weight, as the official code does it).
    """
    if hooks.rms_norm is not None and (y := hooks.rms_norm(x, weight, eps)) is not None:
        return y
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


def swiglu(x: Tensor, up: Tensor, down: Tensor) -> Tensor:
    """Gated MLP: `up` holds [value; gate] rows (value FIRST, unlike most SwiGLU checkpoints)."""
    if hooks.swiglu is not None and (y := hooks.swiglu(x, up, down)) is not None:
        return y
    return linear(silu_gate(linear(x, up)), down)


def silu_gate(value_gate: Tensor) -> Tensor:
    """silu(gate) * value for [..., 2n] = [value; gate] -> [..., n]."""
    if hooks.silu_gate is not None and (y := hooks.silu_gate(value_gate)) is not None:
        return y
    value, gate = value_gate.chunk(2, dim=-1)
    return F.silu(gate) * value


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """Scaled dot-product attention with grouped-query heads (query head h reads kv head h // (Hq / Hkv)).

    q: [B, Hq, Lq, D]; k, v: [B, Hkv, Lk, D]; mask: bool [B or 1, 1, Lq, Lk], True = may attend, or None with
    `causal` for plain causal attention (Lq = Lk), or None alone for full attention.
    """
    batch, n_heads, q_len, head_dim = q.shape
    n_kv_heads = k.shape[1]
    group = n_heads // n_kv_heads
    scale = head_dim**-0.5
    if q_len == 1:
        # Decoding: the query heads that share a kv head become that head's rows, so the KV cache is read once
        # and never copied; a [B, 1, 1, Lk] mask broadcasts over them.
        q = q.reshape(batch, n_kv_heads, group, head_dim)  # [B, Hkv, G, D]
        if mask is None and hooks.decode_attention is not None and (
                out := hooks.decode_attention(q, k, v, scale)) is not None:
            return out.reshape(batch, n_heads, 1, head_dim)
    elif mask is None and hooks.attention is not None and (out := hooks.attention(q, k, v, scale, causal)) is not None:
        return out
    elif group > 1:
        k = k.repeat_interleave(group, dim=1)  # [B, Hq, Lk, D]
        v = v.repeat_interleave(group, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    return out.reshape(batch, n_heads, q_len, head_dim)  # [B, Hq, Lq, D]
