"""The language model: a Qwen3-1.7B-Base decoder that reads text tokens with image features added in.

Where it sits:  pixels -> tiler -> patch embed -> ViT -> pooler -> **decoder** -> sampler.
Paper: architecture, the language model. Mirrors the official `JinaVLMTextModel` (modeling_jvlm.py: the feature
injection, the blocks, the final norm), `ExtendedEmbedding`, `TransformerBlock` and `MHSDPA` (blocks_jvlm.py),
and the `lm_head` of `JinaVLMForConditionalGeneration`.

Where the paper's diagram says "visual tokens go into the LLM", the code does something simpler than a
substitution: the prompt already contains one <im_patch> token per visual vector (the tiler laid them out),
and the connector's vector is ADDED to that token's embedding. The image tokens have their own embedding rows
(`new_embedding`, after the 151,936 text rows), but no lm_head rows, so they can never be generated.

Each of the 28 pre-norm blocks: RMSNorm -> fused qkv (+ stored biases) -> per-head RMSNorm of q and k ->
RoPE -> grouped-query attention (16 query heads share 8 kv heads) -> out; RMSNorm -> SwiGLU MLP.
The KV cache holds every past position's keys and values, so each decoding step computes one new column.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import TextConfig
from .layers import attention, hooks, linear, rms_norm, swiglu
from .rope import apply_rope, rope_angles

PREFIX = "model.language_model."
LM_HEAD = "lm_head.weight"  # outside the language model's prefix, as in the official checkpoint


def weight_shapes(cfg: TextConfig) -> dict[str, tuple[int, ...]]:
    """The decoder's checkpoint tensors with their shapes."""
    width, q_size, kv_size = cfg.hidden_size, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    shapes = {PREFIX + "embedding.embedding": (cfg.embedding_size, width),
              PREFIX + "embedding.new_embedding": (cfg.additional_vocab_size, width),
              PREFIX + "ln_f.weight": (width,), LM_HEAD: (cfg.embedding_size, width)}
    for j in range(cfg.n_layers):
        p = f"{PREFIX}layers.{j}."
        shapes.update({
            p + "attn_lnorm.weight": (width,),
            p + "attn.qkv_w.weight": (q_size + 2 * kv_size, width),
            p + "attn.q_b": (q_size,), p + "attn.k_b": (kv_size,), p + "attn.v_b": (kv_size,),
            p + "attn.q_lnorm.weight": (cfg.head_dim,), p + "attn.k_lnorm.weight": (cfg.head_dim,),
            p + "attn.out.weight": (width, q_size),
            p + "ffn_lnorm.weight": (width,),
            p + "ffn.up.weight": (2 * cfg.mlp_size, width), p + "ffn.down.weight": (width, cfg.mlp_size),
        })
    return shapes


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
    """Keys and values of every layer, position by position, plus which of those positions are real tokens.

    The caller says where each chunk goes (`start`); the cache only stores. It grows on demand (by half), so a
    generation allowed many tokens does not allocate them all before the first one.
    """

    keys: list[Tensor]  # per layer [B, kv_heads, capacity, head_dim]
    values: list[Tensor]
    valid: Tensor  # [B, capacity] bool: False for left padding (and for positions not written yet)

    @classmethod
    def empty(cls, cfg: TextConfig, batch: int, capacity: int, dtype: torch.dtype, device) -> "KVCache":
        shape = (batch, cfg.n_kv_heads, capacity, cfg.head_dim)
        return cls(keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)],
                   values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)],
                   valid=torch.zeros(batch, capacity, dtype=torch.bool, device=device))

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def reserve(self, length: int) -> None:
        """Make room for positions 0..length-1, growing the capacity by at least half when it must grow.

        Why half, not double: while the keys and values are copied, the old and the new cache are both held, so
        doubling would hold three times the old cache at that moment (the bench's 1,774-token image prompt and its
        64-token answer: 0.21 GB old, 0.42 GB new; by half: 0.32 GB new). Growing by half still copies a position
        twice on average over a long conversation (a geometric series: 1 / (1.5 - 1)), doubling once."""
        if length <= self.capacity:
            return
        extra = max(length, self.capacity + self.capacity // 2) - self.capacity
        grow = lambda t: torch.cat([t, t.new_zeros(*t.shape[:2], extra, t.shape[3])], dim=2)  # along positions
        self.keys, self.values = [grow(k) for k in self.keys], [grow(v) for v in self.values]
        self.valid = torch.cat([self.valid, self.valid.new_zeros(self.valid.shape[0], extra)], dim=1)


def attention_mask(valid: Tensor, q_len: int) -> Tensor | None:
    """bool [B, 1, q_len, length] for the last q_len of `valid`'s positions [B, length]: causal, no padded keys,
    and each query always sees itself.

    The last rule only matters for padding rows, which would otherwise attend to nothing (softmax of all -inf =
    NaN, and a NaN value times a zero weight still poisons the real rows' sums).
    None when nothing is padded and the chunk is the whole sequence (plain causal) or one token (sees all):
    attention then needs no mask tensor, which lets SDPA skip the masked half of a prefill.
    """
    k_len = valid.shape[1]
    if (q_len == 1 or q_len == k_len) and bool(valid.all()):
        return None
    q_pos = torch.arange(k_len - q_len, k_len, device=valid.device)[:, None]  # [q_len, 1]
    k_pos = torch.arange(k_len, device=valid.device)[None, :]  # [1, length]
    causal = k_pos <= q_pos  # [q_len, length]
    mask = causal[None] & valid[:, None, :]  # [B, q_len, length]
    return (mask | (k_pos == q_pos)[None])[:, None]  # [B, 1, q_len, length]


def normed_rope(x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor) -> Tensor:
    """Qwen3's q/k norm (RMSNorm per head) then RoPE, on x [B, heads, L, head_dim] (`hooks.norm_rope`: both in one
    pass, the same roundings)."""
    if hooks.norm_rope is not None and (out := hooks.norm_rope(x, weight, eps, cos, sin)) is not None:
        return out
    return apply_rope(rms_norm(x, weight, eps), cos, sin)


def decoder_block(x: Tensor, w: dict[str, Tensor], j: int, cfg: TextConfig, cos: Tensor, sin: Tensor,
                  cache: KVCache, start: int, mask: Tensor | None, last_only: bool = False) -> Tensor:
    """One Qwen3 block on x [B, L, width] at positions start..start+L-1 of the cache, which gets its keys/values.

    `last_only`: return only the last position's output [B, 1, width] (the cache still gets every position)."""
    p = f"{PREFIX}layers.{j}."
    batch, q_len, width = x.shape
    q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim

    h = rms_norm(x, w[p + "attn_lnorm.weight"], cfg.norm_eps)
    qkv_bias = torch.cat([w[p + "attn.q_b"], w[p + "attn.k_b"], w[p + "attn.v_b"]])
    q, k, v = linear(h, w[p + "attn.qkv_w.weight"], qkv_bias).split([q_size, kv_size, kv_size], dim=-1)
    q = q.view(batch, q_len, cfg.n_heads, cfg.head_dim).transpose(1, 2)  # [B, 16, L, 128]
    k = k.view(batch, q_len, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)  # [B, 8, L, 128]
    v = v.view(batch, q_len, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
    q = normed_rope(q, w[p + "attn.q_lnorm.weight"], cfg.norm_eps, cos, sin)
    k = normed_rope(k, w[p + "attn.k_lnorm.weight"], cfg.norm_eps, cos, sin)

    end = start + q_len
    cache.keys[j][:, :, start:end] = k
    cache.values[j][:, :, start:end] = v
    keys, values = cache.keys[j][:, :, :end], cache.values[j][:, :, :end]  # [B, 8, end, 128]: past and new
    if last_only:  # the last position's query still reads every key; the other queries' outputs are never read
        q, x, q_len = q[:, :, -1:], x[:, -1:], 1  # [B, 16, 1, 128], [B, 1, width]
        mask = None if mask is None else mask[:, :, -1:]  # [B, 1, 1, end]
    h = attention(q, keys, values, mask, causal=mask is None and q_len > 1)
    h = h.transpose(1, 2).reshape(batch, q_len, q_size)  # [B, L, 16·128]
    x = x + linear(h, w[p + "attn.out.weight"])

    h = rms_norm(x, w[p + "ffn_lnorm.weight"], cfg.norm_eps)
    return x + swiglu(h, w[p + "ffn.up.weight"], w[p + "ffn.down.weight"])


def run_decoder(x: Tensor, positions: Tensor, valid: Tensor, w: dict[str, Tensor], cfg: TextConfig,
                cache: KVCache, start: int, last_only: bool = False) -> Tensor:
    """The blocks on new embeddings x [B, L, width] written at cache positions start..start+L-1 -> [B, L, width].

    positions [B, L]: the RoPE positions (they differ from the cache positions in left-padded rows);
    valid [B, L] bool: False for padding. Used for a prefill (a whole prompt, or a follow-up question after
    an earlier turn) and for each generated token (L = 1): the cache holds everything before `start`.

    `last_only`: the last position's hidden state alone [B, 1, width], all a next token needs. Every block still
    writes every position's keys and values (later tokens read them), but the last block's attention for the
    other queries, its out product and its MLP, whose results nothing reads, are skipped (the bench's 1,774-token
    prefill on 2 cores of an Intel Xeon with AMX: 2.89 against 2.97 s). The official code computes those rows and
    keeps the last one.
    """
    end = start + x.shape[1]
    cache.reserve(end)
    cache.valid[:, start:end] = valid
    cos, sin = rope_angles(positions, cfg.head_dim, cfg.rope_theta)
    mask = attention_mask(cache.valid[:, :end], x.shape[1])
    for j in range(cfg.n_layers):
        x = decoder_block(x, w, j, cfg, cos, sin, cache, start, mask, last_only and j == cfg.n_layers - 1)
    return rms_norm(x, w[PREFIX + "ln_f.weight"], cfg.norm_eps)


def lm_head(hidden: Tensor, w: dict[str, Tensor]) -> Tensor:
    """[..., width] -> float32 logits [..., embedding_size] (an untied head: the image ids have no row)."""
    return linear(hidden, w[LM_HEAD]).float()
