"""How many floating-point operations one image prompt costs before its first token: the bench's compute roofline.

Decoding is bound by memory (every weight read once per token); the time to first token is bound by arithmetic:
the ViT over every crop, the connector, and the decoder over the whole prompt. This file counts that arithmetic
from the config and the prompt's size alone, so the bench can set it against the machine's measured matrix-multiply
rate: `ttft_roofline_s = ttft_flop / matmul rate`.

What is counted, as 2 FLOP per multiply-add:
- matrix products: every `linear` (patch embedding, ViT blocks, the connector's pooling and projector, the decoder
  blocks, and the LM head for the LAST position only, the one logit row the prefill needs; the last decoder block's
  out product and MLP likewise on that row alone);
- attention: the two products Q Kᵀ and P V (full over a crop's 729 patches in the ViT, 4 keys per window in the
  connector, causal in the prefill: query i sees keys 0..i, so L(L+1)/2 pairs, the half a causal kernel computes;
  the last block's last query alone).
The products are listed shape by shape (`Product`, `prompt_products`): the bench also times them alone, at
these shapes, to tell what the machine's matrix library does on this prompt before any other work.
What is not: softmax, norms, GELU/SiLU, RoPE, residual adds: a few operations per value, bound by memory and far
below 1 % of the count (they are what a fast implementation must hide, not what the roofline is made of).

Only the ViT blocks that run are counted: up to the deepest block the connector reads (25 of 27 in the release).
For the release (minivlm/configs/jina-vlm) and the 1176x910 benchmark image (13 crops, 1,774 prompt tokens):
ViT 7.23 T matrix + 0.80 T attention, connector 0.26 T, prefill 4.85 T + 0.35 T: 13.49 T in all
(tests/tools/test_flops.py; the last decoder block over every position, as the official code runs it, would
make the prefill 5.00 T + 0.36 T).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import ModelConfig, TextConfig, VisionConfig


@dataclass(frozen=True)
class Flops:
    """FLOPs of one part of the model, split into matrix products and attention."""

    matmul: int
    attention: int

    @property
    def total(self) -> int:
        return self.matmul + self.attention

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.matmul + other.matmul, self.attention + other.attention)


def linear_flop(rows: int, fan_in: int, fan_out: int) -> int:
    """`linear` on [rows, fan_in] with a [fan_out, fan_in] weight: one multiply-add per (row, in, out)."""
    return 2 * rows * fan_in * fan_out


def attention_flop(pairs: int, heads: int, head_dim: int) -> int:
    """Q Kᵀ and P V over `pairs` (query, key) pairs per head: two multiply-adds per pair and channel."""
    return 2 * 2 * pairs * heads * head_dim


@dataclass(frozen=True)
class Product:
    """One `linear` shape of the prompt, run `count` times: [rows, fan_in] times a [fan_out, fan_in] weight. The
    bench times these shapes alone (`probes.time_products`), the matrix library's own speed on this prompt."""

    rows: int
    fan_in: int
    fan_out: int
    count: int = 1

    @property
    def flop(self) -> int:
        return self.count * linear_flop(self.rows, self.fan_in, self.fan_out)


def vit_products(cfg: VisionConfig, crops: int) -> list[Product]:
    """Patch embedding + the ViT blocks up to the deepest selected one, over `crops` crops of grid² patches."""
    patches, inner = crops * cfg.grid**2, cfg.n_heads * cfg.head_dim
    blocks = max(cfg.selected_blocks) + 1
    return [Product(patches, 3 * cfg.patch_size**2, cfg.hidden_size),  # patch embedding
            Product(patches, cfg.hidden_size, 3 * inner, blocks),  # fused qkv
            Product(patches, inner, cfg.hidden_size, blocks),  # attention out
            Product(patches, cfg.hidden_size, cfg.mlp_size, blocks),  # MLP up
            Product(patches, cfg.mlp_size, cfg.hidden_size, blocks)]  # MLP down


def vit_flops(cfg: VisionConfig, crops: int) -> Flops:
    """`vit_products`, and attention: every patch sees its whole crop, in every block that runs."""
    blocks = max(cfg.selected_blocks) + 1
    attention = blocks * attention_flop(crops * cfg.grid**4, cfg.n_heads, cfg.head_dim)
    return Flops(sum(p.flop for p in vit_products(cfg, crops)), attention)


def connector_products(cfg: VisionConfig, crops: int) -> list[Product]:
    """Attention pooling (one query per window over its cells) and the SwiGLU projector, every window of every crop
    (the margin windows the decoder never sees are computed too)."""
    windows, cells = crops * cfg.pooled_per_crop, cfg.pool_h * cfg.pool_w
    features, inner = cfg.hidden_size * len(cfg.vit_layers), cfg.pool_n_heads * cfg.pool_head_dim
    return [Product(windows, features, inner),  # query from the window's mean
            Product(windows * cells, features, 2 * inner),  # keys and values from its cells
            Product(windows, inner, cfg.hidden_size),  # pooling out
            Product(windows, cfg.hidden_size, 2 * cfg.projector_size),  # projector up: [value; gate]
            Product(windows, cfg.projector_size, cfg.output_size)]  # projector down


def connector_flops(cfg: VisionConfig, crops: int) -> Flops:
    """`connector_products`, and the pooling's attention: each window's query over its cells."""
    windows, cells = crops * cfg.pooled_per_crop, cfg.pool_h * cfg.pool_w
    attention = attention_flop(windows * cells, cfg.pool_n_heads, cfg.pool_head_dim)
    return Flops(sum(p.flop for p in connector_products(cfg, crops)), attention)


def prefill_products(cfg: TextConfig, tokens: int) -> list[Product]:
    """The decoder's blocks over a prompt of `tokens` tokens and the LM head on its last position. The last block
    computes every position's keys and values but its out product and MLP for the last position only, the one
    whose output is read (decoder.run_decoder's `last_only`)."""
    q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    every_row = cfg.n_layers - 1  # the blocks whose every output row the next block reads
    return [Product(tokens, cfg.hidden_size, q_size + 2 * kv_size, cfg.n_layers),  # fused qkv
            Product(tokens, q_size, cfg.hidden_size, every_row),  # attention out
            Product(tokens, cfg.hidden_size, 2 * cfg.mlp_size, every_row),  # SwiGLU up: [value; gate]
            Product(tokens, cfg.mlp_size, cfg.hidden_size, every_row),  # SwiGLU down
            Product(1, q_size, cfg.hidden_size),  # the last block's out, up and down on its last row
            Product(1, cfg.hidden_size, 2 * cfg.mlp_size),
            Product(1, cfg.mlp_size, cfg.hidden_size),
            Product(1, cfg.hidden_size, cfg.embedding_size)]  # LM head


def prefill_flops(cfg: TextConfig, tokens: int) -> Flops:
    """`prefill_products`, and causal attention: query i sees keys 0..i; in the last block only the last query
    runs, over every key."""
    causal_pairs = tokens * (tokens + 1) // 2
    # Grouped-query heads share keys, not arithmetic: every query head does its own products.
    attention = ((cfg.n_layers - 1) * attention_flop(causal_pairs, cfg.n_heads, cfg.head_dim)
                 + attention_flop(tokens, cfg.n_heads, cfg.head_dim))
    return Flops(sum(p.flop for p in prefill_products(cfg, tokens)), attention)


@dataclass(frozen=True)
class PromptFlops:
    """The arithmetic before the first token of one prompt with `crops` crops and `tokens` tokens."""

    vit: Flops
    connector: Flops
    prefill: Flops

    @property
    def vision(self) -> Flops:
        """What the bench times as "vision": `encode_images`, the ViT and the connector."""
        return self.vit + self.connector

    @property
    def ttft(self) -> Flops:
        return self.vision + self.prefill


def prompt_flops(cfg: ModelConfig, crops: int, tokens: int) -> PromptFlops:
    """FLOPs of one prompt (batch 1) of `tokens` tokens holding `crops` crops, from the config alone."""
    return PromptFlops(vit_flops(cfg.vision, crops), connector_flops(cfg.vision, crops),
                       prefill_flops(cfg.text, tokens))


def prompt_products(cfg: ModelConfig, crops: int, tokens: int) -> tuple[list[Product], list[Product]]:
    """The matrix products of one prompt: (vision's, the prefill's): what `prompt_flops` counts as matmul."""
    return (vit_products(cfg.vision, crops) + connector_products(cfg.vision, crops),
            prefill_products(cfg.text, tokens))
