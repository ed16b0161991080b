"""The vision encoder: SigLIP2-So400M/14 at 378 px (27 pre-norm transformer blocks, width 1152).

Where it sits:  pixels -> tiler -> patch embed -> **ViT** -> pooler -> decoder -> sampler.
Paper: architecture, the vision encoder and its intermediate-layer features. Mirrors the official
`JinaVLMVisionModel` (modeling_jvlm.py) and its `TransformerBlock` / `MHSDPA` / `FFN` (blocks_jvlm.py).

Jina-VLM does not use the ViT's last output. The connector reads the raw outputs of two *intermediate*
blocks (`vit_layers = [-4, -10]` index the list [block 0 out, ..., block 26 out, post_lnorm(block 26 out)],
i.e. blocks 24 and 18 of the real model) and concatenates them, 24 first: 2 x 1152 = 2304 channels per patch.
So we run only up to the deepest selected block: the official code also runs blocks 25-26 and the final
LayerNorm and then throws them away (about 7% of the ViT's compute).

One more official rule: a crop whose pixels are all exactly -1 counts as padding and its features are zeroed.
minmax normalisation maps black to -1, so a genuinely all-black crop is zeroed too; we keep that, since it is
what the model saw in training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import patch_embed
from .config import VisionConfig
from .layers import attention, hooks, layer_norm, linear

PREFIX = "model.vision_model."


def weight_shapes(cfg: VisionConfig) -> dict[str, tuple[int, ...]]:
    """The checkpoint's ViT tensors with their shapes: every block and the final LayerNorm."""
    width, inner = cfg.hidden_size, cfg.n_heads * cfg.head_dim
    shapes = {}
    for i in range(cfg.n_layers):
        p = f"{PREFIX}layers.{i}."
        shapes.update({
            p + "attn_lnorm.weight": (width,), p + "attn_lnorm.bias": (width,),
            p + "attn.qkv_w.weight": (3 * inner, width),
            p + "attn.q_b": (inner,), p + "attn.k_b": (inner,), p + "attn.v_b": (inner,),
            p + "attn.out.weight": (width, inner), p + "attn.out.bias": (width,),
            p + "ffn_lnorm.weight": (width,), p + "ffn_lnorm.bias": (width,),
            p + "ffn.up.weight": (cfg.mlp_size, width), p + "ffn.up.bias": (cfg.mlp_size,),
            p + "ffn.down.weight": (width, cfg.mlp_size), p + "ffn.down.bias": (width,),
        })
    shapes.update({PREFIX + "post_lnorm.weight": (width,), PREFIX + "post_lnorm.bias": (width,)})
    return shapes


def unread_weights(cfg: VisionConfig) -> set[str]:
    """Tensors the checkpoint holds that never influence the answer: the blocks after the deepest selected one
    and the final LayerNorm (the loader checks their shapes but does not load them)."""
    deepest = max(cfg.selected_blocks)
    return {key for key in weight_shapes(cfg)
            if key.startswith(PREFIX + "post_lnorm.")
            or key.startswith(PREFIX + "layers.") and int(key.split(".")[3]) > deepest}


def qkv_bias(w: dict[str, Tensor], i: int) -> Tensor:
    """Block i's fused qkv bias: the checkpoint stores the three parts apart."""
    p = f"{PREFIX}layers.{i}."
    return torch.cat([w[p + "attn.q_b"], w[p + "attn.k_b"], w[p + "attn.v_b"]])


def self_attention(h: Tensor, w: dict[str, Tensor], i: int, cfg: VisionConfig) -> Tensor:
    """Block i's heads over each crop's patches, before the out projection: h [crops, 729, width] (normed)."""
    qkv = linear(h, w[f"{PREFIX}layers.{i}.attn.qkv_w.weight"], qkv_bias(w, i))  # [crops, 729, 3·width]
    return attend_heads(qkv, cfg)


def attend_heads(qkv: Tensor, cfg: VisionConfig) -> Tensor:
    """The fused projection qkv [crops, 729, 3·width] -> each head's attention over its crop, heads side by side:
    [crops, 729, width]."""
    crops, n_tokens, _ = qkv.shape
    qkv = qkv.view(crops, n_tokens, 3, cfg.n_heads, cfg.head_dim).permute(2, 0, 3, 1, 4)  # [3, crops, heads, 729, 72]
    h = attention(qkv[0], qkv[1], qkv[2])  # full (non-causal) attention over the crop's patches
    return h.transpose(1, 2).reshape(crops, n_tokens, cfg.n_heads * cfg.head_dim)  # [crops, 729, width]


def vit_block(x: Tensor, w: dict[str, Tensor], i: int, cfg: VisionConfig) -> Tensor:
    """One pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x)). x: [crops, 729, width]."""
    p = f"{PREFIX}layers.{i}."
    h = layer_norm(x, w[p + "attn_lnorm.weight"], w[p + "attn_lnorm.bias"], cfg.norm_eps)
    x = x + linear(self_attention(h, w, i, cfg), w[p + "attn.out.weight"], w[p + "attn.out.bias"])

    h = layer_norm(x, w[p + "ffn_lnorm.weight"], w[p + "ffn_lnorm.bias"], cfg.norm_eps)
    h = F.gelu(linear(h, w[p + "ffn.up.weight"], w[p + "ffn.up.bias"]), approximate="tanh")
    return x + linear(h, w[p + "ffn.down.weight"], w[p + "ffn.down.bias"])


def vit_features(patches: Tensor, w: dict[str, Tensor], cfg: VisionConfig,
                 run_block: Callable[[Tensor, int], Tensor] | None = None) -> Tensor:
    """patches [crops, 729, 588] -> selected block outputs, concatenated: [crops, 729, width · len(vit_layers)].

    `run_block(x, i)`: how block i runs, `vit_block` on `w` by default (the trainer passes its block modules);
    without one, an installed `hooks.vit_block` (minivlm.accel: the same block, compiled) may run it instead.
    """
    selected = cfg.selected_blocks  # (24, 18) real, (7, 1) in the tiny fixture
    x = patch_embed.embed_patches(patches, w)
    outputs = {}
    for i in range(max(selected) + 1):  # blocks after the deepest selected one never influence the answer
        if run_block is not None:
            x = run_block(x, i)
        elif hooks.vit_block is None or (fast := hooks.vit_block(x, w, i, cfg)) is None:
            x = vit_block(x, w, i, cfg)
        else:
            x = fast
        if i in selected:
            outputs[i] = x
    features = torch.cat([outputs[i] for i in selected], dim=-1)  # [crops, 729, 2·width]
    is_padding_crop = (patches == -1).flatten(1).all(dim=1)  # [crops]
    if not is_padding_crop.any():  # collate makes none; the official processor pads a batch's images with them
        return features
    return features * (~is_padding_crop).to(features.dtype)[:, None, None]
