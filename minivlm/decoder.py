"""The language model: a Qwen3-1.7B-Base decoder that reads text tokens with image features added in.

Where the paper's diagram says "visual tokens go into the LLM", the code does something simpler than a
substitution: the prompt already contains one <im_patch> token per visual vector (the tiler laid them out),
and the connector's vector is ADDED to that token's embedding. The image tokens have their own embedding rows
(`new_embedding`, after the 151,936 text rows), but no lm_head rows, so they can never be generated.

Each of the 28 pre-norm blocks: RMSNorm -> fused qkv (+ stored biases) -> per-head RMSNorm of q and k ->
RoPE -> grouped-query attention (16 query heads share 8 kv heads) -> out; RMSNorm -> SwiGLU MLP.
The KV cache is preallocated for the whole generation, so each decoding step writes one column.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import TextConfig
from .layers import attention, linear, rms_norm, swiglu
from .rope import apply_rope, rope_angles

PREFIX = "model.language_model."


def embed_tokens(ids: Tensor, w: dict[str, Tensor]) -> Tensor:
    """ids [B, L] -> [B, L, width]: ids below embedding_size read `embedding`, the image tokens `new_embedding`.

    Same as looking up in cat(embedding, new_embedding), without building that 152k-row copy.
    """
    base, extra = w[PREFIX + "embedding.embedding"], w[PREFIX + "embedding.new_embedding"]
    n_base = base.shape[0]
    is_extra = ids >= n_base
    x = torch.nn.functional.embedding(ids.clamp(max=n_base - 1), base)
    if is_extra.any():
        extra_rows = torch.nn.functional.embedding((ids - n_base).clamp(min=0), extra)
        x = torch.where(is_extra[..., None], extra_rows, x)
    return x


def add_image_features(x: Tensor, features: Tensor, image_input_idx: Tensor, crop_batch_index: Tensor) -> Tensor:
    """x [B, L, width] += each kept visual vector at its <im_patch> position.

    features [crops, 196, width]; image_input_idx [crops, 196] (position in the sequence, < 0 = margin cell that
    the LLM never sees); crop_batch_index [crops]: which sequence of the batch each crop belongs to.
    """
    keep = image_input_idx >= 0  # [crops, 196]
    rows = crop_batch_index[:, None].expand_as(image_input_idx)[keep]  # [kept]
    return x.index_put((rows, image_input_idx[keep]), features[keep].to(x.dtype), accumulate=True)


@dataclass
class KVCache:
    """Keys and values of every layer for positions 0..length-1, plus which of those positions are real."""

    keys: list[Tensor]  # per layer [B, kv_heads, capacity, head_dim]
    values: list[Tensor]
    valid: Tensor  # [B, capacity] bool: False for left padding (and for positions not written yet)
    length: int = 0

    @classmethod
    def empty(cls, cfg: TextConfig, batch: int, capacity: int, dtype: torch.dtype, device) -> "KVCache":
        shape = (batch, cfg.n_kv_heads, capacity, cfg.head_dim)
        return cls(keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)],
                   values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)],
                   valid=torch.zeros(batch, capacity, dtype=torch.bool, device=device))


def attention_mask(cache: KVCache, q_len: int) -> Tensor | None:
    """bool [B, 1, q_len, length]: causal, no padded keys, and each query always sees itself.

    The last rule only matters for padding rows, which would otherwise attend to nothing (softmax of all -inf =
    NaN, and a NaN value times a zero weight still poisons the real rows' sums).
    None when nothing is padded and the chunk is the whole sequence (plain causal) or one token (sees all):
    attention then needs no mask tensor, which lets SDPA skip the masked half of a prefill.
    """
    k_len = cache.length
    if (q_len == 1 or q_len == k_len) and bool(cache.valid[:, :k_len].all()):
        return None
    q_pos = torch.arange(k_len - q_len, k_len, device=cache.valid.device)[:, None]  # [q_len, 1]
    k_pos = torch.arange(k_len, device=cache.valid.device)[None, :]  # [1, length]
    causal = k_pos <= q_pos  # [q_len, length]
    mask = causal[None] & cache.valid[:, None, :k_len]  # [B, q_len, length]
    return (mask | (k_pos == q_pos)[None])[:, None]  # [B, 1, q_len, length]


def decoder_block(x: Tensor, w: dict[str, Tensor], j: int, cfg: TextConfig, cos: Tensor, sin: Tensor,
                  cache: KVCache, mask: Tensor | None) -> Tensor:
    """One Qwen3 block on x [B, L, width]; writes this layer's new keys/values into the cache."""
    p = f"{PREFIX}layers.{j}."
    batch, q_len, width = x.shape
    q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim

    h = rms_norm(x, w[p + "attn_lnorm.weight"], cfg.norm_eps)
    qkv_bias = torch.cat([w[p + "attn.q_b"], w[p + "attn.k_b"], w[p + "attn.v_b"]])
    q, k, v = linear(h, w[p + "attn.qkv_w.weight"], qkv_bias).split([q_size, kv_size, kv_size], dim=-1)
    q = q.view(batch, q_len, cfg.n_heads, cfg.head_dim).transpose(1, 2)  # [B, 16, L, 128]
    k = k.view(batch, q_len, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)  # [B, 8, L, 128]
    v = v.view(batch, q_len, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
    q = apply_rope(rms_norm(q, w[p + "attn.q_lnorm.weight"], cfg.norm_eps), cos, sin)  # q/k norm per head, before RoPE
    k = apply_rope(rms_norm(k, w[p + "attn.k_lnorm.weight"], cfg.norm_eps), cos, sin)

    start = cache.length - q_len  # the caller advanced cache.length for this chunk already
    cache.keys[j][:, :, start:cache.length] = k
    cache.values[j][:, :, start:cache.length] = v
    keys, values = cache.keys[j][:, :, :cache.length], cache.values[j][:, :, :cache.length]
    h = attention(q, keys, values, mask, causal=mask is None and q_len > 1)
    h = h.transpose(1, 2).reshape(batch, q_len, q_size)  # [B, L, 16·128]
    x = x + linear(h, w[p + "attn.out.weight"])

    h = rms_norm(x, w[p + "ffn_lnorm.weight"], cfg.norm_eps)
    return x + swiglu(h, w[p + "ffn.up.weight"], w[p + "ffn.down.weight"])


def decode(x: Tensor, positions: Tensor, valid: Tensor, w: dict[str, Tensor], cfg: TextConfig,
           cache: KVCache) -> Tensor:
    """Run the blocks on new embeddings x [B, L, width] (positions [B, L], valid [B, L] bool) -> [B, L, width].

    Used for the prefill (the whole prompt) and for each generated token (L = 1): the cache holds the past.
    """
    q_len = x.shape[1]
    if cache.length + q_len > cache.valid.shape[1]:
        raise ValueError(f"KV cache full: {cache.length} + {q_len} positions > capacity {cache.valid.shape[1]}")
    cache.valid[:, cache.length:cache.length + q_len] = valid
    cache.length += q_len
    cos, sin = rope_angles(positions, cfg.head_dim, cfg.rope_theta)
    mask = attention_mask(cache, q_len)
    for j in range(cfg.n_layers):
        x = decoder_block(x, w, j, cfg, cos, sin, cache, mask)
    return rms_norm(x, w[PREFIX + "ln_f.weight"], cfg.norm_eps)


def lm_head(hidden: Tensor, w: dict[str, Tensor]) -> Tensor:
    """[..., width] -> float32 logits [..., embedding_size] (an untied head: the image ids have no row)."""
    return linear(hidden, w["lm_head.weight"]).float()
