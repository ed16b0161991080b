"""What travels from the processor to the model: one prompt's tensors (`Sample`) and a left-padded `Batch`.

Where it sits: between the tiler/processor (pixels and text -> these tensors) and the model (ViT, pooler,
decoder). Mirrors the outputs of the official `JinaVLMProcessor` (processing_jvlm.py), without their batch axis
on the crops: here all crops of a batch are stacked and `crop_batch_index` says whose each one is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import torch
from torch import Tensor


class Sample(TypedDict):
    """One prompt, as `minivlm.formats.processor.preprocess` makes it (the real model's sizes in brackets)."""

    input_ids: Tensor  # [L] int64: text tokens with each image's layout tokens in place of its <|image|>
    images: Tensor  # [crops, 729, 588] float32 in [-1, 1]: every crop's patches, thumbnail first per image
    image_masks: Tensor  # [crops, 729] int64: 1 real, 0 padding, -1 partial padding (the last tile, see pooler)
    image_input_idx: Tensor  # [crops, 196] int64: the position in input_ids of each pooled cell, -1 if dropped


class Batch(TypedDict):
    """Samples left-padded into one batch (`collate`): what `generation.prefill` consumes."""

    input_ids: Tensor  # [B, L] int64, padding first
    attention_mask: Tensor  # [B, L] bool: False for padding
    images: Tensor  # [crops, 729, 588]: all samples' crops, in order
    image_masks: Tensor  # [crops, 729]
    image_input_idx: Tensor  # [crops, 196]: positions shifted by each row's padding
    crop_batch_index: Tensor  # [crops] int64: the row each crop belongs to


def collate(samples: Sequence[Sample], pad_id: int = 0) -> Batch:
    """Left-pad samples into one batch. No padding crops are made, so the ViT runs on real crops only."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    longest = max(len(s["input_ids"]) for s in samples)
    input_ids = torch.full((len(samples), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(samples), longest, dtype=torch.bool)
    owners, shifted = [], []
    for b, s in enumerate(samples):
        pad = longest - len(s["input_ids"])
        input_ids[b, pad:] = s["input_ids"]
        attention_mask[b, pad:] = True
        idx = s["image_input_idx"]
        shifted.append(torch.where(idx >= 0, idx + pad, idx))
        owners.append(torch.full((len(idx),), b, dtype=torch.long))
    return Batch(input_ids=input_ids, attention_mask=attention_mask,
                 images=torch.cat([s["images"] for s in samples]),
                 image_masks=torch.cat([s["image_masks"] for s in samples]),
                 image_input_idx=torch.cat(shifted), crop_batch_index=torch.cat(owners))


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(**{key: value.to(device) for key, value in batch.items()})
