"""The vision-language connector: attention pooling of 2x2 patch windows, then a SwiGLU projector.

Where it sits:  pixels -> tiler -> patch embed -> ViT -> **pooler** -> decoder -> sampler.
Paper: architecture, the vision-language connector ("attention pooling", 4x fewer visual tokens). Mirrors the
official `VisionLanguageConnector` (blocks_jvlm.py), which `JinaVLMVisionModel` (modeling_jvlm.py) owns. Per crop:

1. pad embeddings: learned vectors added to patches that are padding (row 0) or partial padding (row 1);
2. the 27x27 feature map is zero-padded to 28x28 (27 is odd), giving 14x14 = 196 windows of 2x2 patches;
3. each window becomes ONE vector by single-query cross-attention: the query is the window's mean, the keys
   and values are its 4 patches (so the softmax runs over 4 keys only);
4. a SwiGLU MLP projects 1152 -> 2048, the decoder's width.

So a crop's 729 ViT tokens become 196 vectors (the paper's "182" is 729/4 without the odd-side padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import VisionConfig
from .layers import attention, linear, swiglu

PREFIX = "model.vision_model.vl_connector."


def weight_shapes(cfg: VisionConfig) -> dict[str, tuple[int, ...]]:
    """The connector's checkpoint tensors with their shapes (it reads two ViT layers: 2 x width channels)."""
    features, inner = cfg.hidden_size * len(cfg.vit_layers), cfg.pool_n_heads * cfg.pool_head_dim
    p = PREFIX + "pooling."
    return {
        PREFIX + "pad_embed": (2, features),
        p + "q_w.weight": (inner, features), p + "kv_w.weight": (2 * inner, features),
        p + "q_b": (inner,), p + "k_b": (inner,), p + "v_b": (inner,),
        p + "out.weight": (cfg.hidden_size, inner), p + "out.bias": (cfg.hidden_size,),
        PREFIX + "projector.up.weight": (2 * cfg.projector_size, cfg.hidden_size),
        PREFIX + "projector.down.weight": (cfg.output_size, cfg.projector_size),
    }


def add_pad_embeddings(features: Tensor, image_masks: Tensor, pad_embed: Tensor) -> Tensor:
    """features [crops, 729, C], image_masks [crops, 729] (1 = real, 0 = padding, -1 = partial padding).

    In the released processor every mask entry is 1 except one row of -1 that it appends per image. Because the
    thumbnail is put in front of the crops but not of the masks, that -1 row lands on the image's LAST TILE:
    all its patches get `pad_embed[1]`. It is an upstream off-by-one, but it is what the weights were trained
    with, so we reproduce it (the tiler produces the masks exactly as the official processor does).
    """
    # Where the mask is 1 both terms are zero: only the other patches (usually one tile) are summed, which keeps a
    # second and third full-size float32 copy of the features out of every image's encoding.
    changed = image_masks != 1  # [crops, 729]
    masks = image_masks[changed].float()[:, None]  # [patches changed, 1]
    all_pad = (masks == 0).float()
    partial_pad = ((masks < 1) & (masks != 0)).float()
    padded = features.clone()
    # The official sum runs in float32 (the masks are float32) and is cast back once.
    padded[changed] = (features[changed].float() + pad_embed[0].float() * all_pad
                       + pad_embed[1].float() * partial_pad).to(features.dtype)
    return padded


def to_windows(features: Tensor, grid: int, pool_h: int, pool_w: int) -> Tensor:
    """[crops, grid², C] -> [crops · windows, pool_h · pool_w, C], windows row-major, cells row-major inside."""
    crops, _, channels = features.shape
    fmap = features.view(crops, grid, grid, channels)  # [crops, 27, 27, C]
    pad_h, pad_w = -grid % pool_h, -grid % pool_w
    fmap = F.pad(fmap, (0, 0, 0, pad_w, 0, pad_h))  # [crops, 28, 28, C]: one zero column right, one zero row below
    rows, cols = fmap.shape[1] // pool_h, fmap.shape[2] // pool_w
    fmap = fmap.view(crops, rows, pool_h, cols, pool_w, channels)  # [crops, 14, 2, 14, 2, C]
    fmap = fmap.permute(0, 1, 3, 2, 4, 5)  # [crops, 14, 14, 2, 2, C]
    return fmap.reshape(crops * rows * cols, pool_h * pool_w, channels)  # [crops·196, 4, C]


def attention_pool(windows: Tensor, w: dict[str, Tensor], cfg: VisionConfig) -> Tensor:
    """[n, 4, C] -> [n, width]: one query per window (the mean of its 4 cells, zeros included), 4 keys."""
    n, cells, _ = windows.shape
    heads, head_dim = cfg.pool_n_heads, cfg.pool_head_dim
    p = PREFIX + "pooling."
    query = windows.mean(dim=1, keepdim=True)  # [n, 1, C]
    q = linear(query, w[p + "q_w.weight"], w[p + "q_b"])  # [n, 1, heads·72]
    kv = linear(windows, w[p + "kv_w.weight"], torch.cat([w[p + "k_b"], w[p + "v_b"]]))  # [n, 4, 2·heads·72]
    k, v = kv.chunk(2, dim=-1)
    q = q.view(n, 1, heads, head_dim).transpose(1, 2)  # [n, heads, 1, 72]
    k = k.reshape(n, cells, heads, head_dim).transpose(1, 2)  # [n, heads, 4, 72]
    v = v.reshape(n, cells, heads, head_dim).transpose(1, 2)
    pooled = attention(q, k, v).reshape(n, heads * head_dim)  # [n, heads·72]
    return linear(pooled, w[p + "out.weight"], w[p + "out.bias"])


def connector(features: Tensor, image_masks: Tensor, w: dict[str, Tensor], cfg: VisionConfig) -> Tensor:
    """ViT features [crops, 729, 2·width] -> LLM-ready vectors [crops, 196, text width]."""
    crops = features.shape[0]
    features = add_pad_embeddings(features, image_masks, w[PREFIX + "pad_embed"])
    windows = to_windows(features, cfg.grid, cfg.pool_h, cfg.pool_w)
    pooled = attention_pool(windows, w, cfg).view(crops, -1, cfg.pool_n_heads * cfg.pool_head_dim)  # [crops, 196, width]
    return swiglu(pooled, w[PREFIX + "projector.up.weight"], w[PREFIX + "projector.down.weight"])
