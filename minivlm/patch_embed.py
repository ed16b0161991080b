"""Patch embedding: 14x14x3 pixel patches -> ViT tokens (the first step of SigLIP2 in Jina-VLM).

The tiler has already cut each 378x378 crop into 27x27 = 729 patches and flattened every patch in
(dy, dx, channel) order, so the "convolution" of a ViT is a plain Linear(588 -> width) here, exactly as the
official checkpoint stores it (`patch_embed.proj`, a Linear, not a Conv2d). A learned table of 729 position
vectors (no CLS row) is added; the official bicubic interpolation of that table is dead code, since the grid
is always 27x27.
"""

from __future__ import annotations

from torch import Tensor

from .layers import linear


def embed_patches(patches: Tensor, w: dict[str, Tensor]) -> Tensor:
    """patches [crops, 729, 588] in [-1, 1] -> tokens [crops, 729, width] in the weights' dtype."""
    proj_w = w["model.vision_model.patch_embed.proj.weight"]
    tokens = linear(patches.to(proj_w.dtype), proj_w, w["model.vision_model.patch_embed.proj.bias"])
    return tokens + w["model.vision_model.pos_embed"]  # [crops, 729, width] + [729, width]
