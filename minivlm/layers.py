"""The few tensor primitives every component shares: linear, the two norms, SwiGLU, attention.

Everything in minivlm is a plain function over tensors taken straight from the checkpoint; these are the
building blocks the ViT (`vit.py`), the connector (`pooler.py`) and the decoder (`decoder.py`) are written in.
Keeping them in one place is what lets each component file read as "the paper's diagram, in code".
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x Wᵀ + b, with W stored [out, in] as in nn.Linear (or prepacked by `pack_for_cpu`)."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


@functools.cache
def can_pack_for_cpu() -> bool:
    """Whether this PyTorch build has oneDNN's prepacked linear (and it gives F.linear's numbers)."""
    try:
        probe = torch.ones(4, 4, dtype=torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(probe, 1)
        return torch.equal(linear(probe[:1], packed), F.linear(probe[:1], probe))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def pack_for_cpu(weight: Tensor) -> Tensor:
    """A bfloat16 [out, in] weight in oneDNN's prepacked layout for one-row inputs (check `can_pack_for_cpu`).

    Decoding multiplies one token's vector by every decoder matrix, a matrix-vector product bound by memory
    reads; on CPU, oneDNN runs it about twice as fast from its own blocked layout (measured by
    `python -m minivlm.bench`), with bit-identical results. The packed copy replaces the plain one, so callers
    pack each matrix as it is loaded: the two copies then coexist while the rest is still unread.
    """
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """The ViT's LayerNorm (mean and variance over the channel axis, affine with bias)."""
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Qwen3's RMSNorm: the statistics in float32, cast back to x's dtype, *then* the weight multiply.

    The order matters in bfloat16 (one rounding before the weight, as the official code does it).
    """
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


def swiglu(x: Tensor, up: Tensor, down: Tensor) -> Tensor:
    """Gated MLP: `up` holds [value; gate] rows (value FIRST, unlike most SwiGLU checkpoints)."""
    value, gate = linear(x, up).chunk(2, dim=-1)
    return linear(F.silu(gate) * value, down)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """Scaled dot-product attention with grouped-query heads (query head h reads kv head h // (Hq / Hkv)).

    q: [B, Hq, Lq, D]; k, v: [B, Hkv, Lk, D]; mask: bool [B or 1, 1, Lq, Lk], True = may attend, or None with
    `causal` for plain causal attention (Lq = Lk), or None alone for full attention.
    """
    batch, n_heads, q_len, head_dim = q.shape
    n_kv_heads = k.shape[1]
    group = n_heads // n_kv_heads
    if group > 1 and q_len == 1:
        # Decoding: the query heads that share a kv head become that head's rows, so the KV cache is read once
        # and never copied; a [B, 1, 1, Lk] mask broadcasts over them.
        q = q.reshape(batch, n_kv_heads, group, head_dim)  # [B, Hkv, G, D]
    elif group > 1:
        k = k.repeat_interleave(group, dim=1)  # [B, Hq, Lk, D]
        v = v.repeat_interleave(group, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=head_dim**-0.5)
    return out.reshape(batch, n_heads, q_len, head_dim)  # [B, Hq, Lq, D]
