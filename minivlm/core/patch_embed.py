"""Patch embedding: 14x14x3 pixel patches -> ViT tokens (the first step of SigLIP2 in Jina-VLM).

Where it sits:  pixels -> tiler -> **patch embed** -> ViT -> pooler -> decoder -> sampler.
Paper: architecture, the vision encoder (SigLIP2-So400M/14-384, used at 378 px). Mirrors the official
`PatchEmbedding` (blocks_jvlm.py) and the positional embedding of `JinaVLMVisionModel` (modeling_jvlm.py).

The tiler has already cut each 378x378 crop into 27x27 = 729 patches and flattened every patch in
(dy, dx, channel) order, so the "convolution" of a ViT is a plain Linear(588 -> width) here, exactly as the
official checkpoint stores it (`patch_embed.proj`, a Linear, not a Conv2d). A learned table of 729 position
vectors (no CLS row) is added; the official bicubic interpolation of that table is dead code, since the grid
is always 27x27.
"""

from __future__ import annotations

from torch import Tensor

from .config import VisionConfig
from .layers import linear

PREFIX = "model.vision_model."


def weight_shapes(cfg: VisionConfig) -> dict[str, tuple[int, ...]]:
    """The checkpoint tensors this file reads, with their shapes."""
    return {PREFIX + "patch_embed.proj.weight": (cfg.hidden_size, 3 * cfg.patch_size**2),
            PREFIX + "patch_embed.proj.bias": (cfg.hidden_size,),
            PREFIX + "pos_embed": (cfg.grid**2, cfg.hidden_size)}


def embed_patches(patches: Tensor, w: dict[str, Tensor]) -> Tensor:
    """patches [crops, 729, 588] in [-1, 1] -> tokens [crops, 729, width] in the weights' dtype."""
    proj_w = w[PREFIX + "patch_embed.proj.weight"]
    tokens = linear(patches.to(proj_w.dtype), proj_w, w[PREFIX + "patch_embed.proj.bias"])
    return tokens + w[PREFIX + "pos_embed"]  # [crops, 729, width] + [729, width]
