"""Prompt assembly: text + images -> the token ids and tensors the model consumes (the official processor).

The text is tokenized as-is (special tokens written in it, like <|im_start|>, become their ids). Each
<|image|> placeholder is REPLACED by that image's block of layout tokens from the tiler, and each kept visual
vector's <im_patch> position is recorded in `image_input_idx`. Then the BOS (Qwen has none, so <|endoftext|>)
is prepended and every index moves by one. A batch of such samples is left-padded by `collate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .config import ModelConfig
from .tiler import tile_image
from .tokenizer import IMAGE_PLACEHOLDER, Tokenizer


class PromptError(ValueError):
    """The prompt and images cannot be assembled as the user asked (counts, length, reserved tokens)."""


def preprocess(text: str, images: Sequence, tokenizer: Tokenizer, cfg: ModelConfig) -> dict[str, Tensor]:
    """One sample: input_ids [L]; images [crops, 729, 588]; image_masks [crops, 729]; image_input_idx [crops, 196].

    Dropped (margin) cells get -1 in image_input_idx; the official code writes a large negative sentinel.
    """
    ids = tokenizer.encode(text)
    reserved = sorted({tokenizer.decode([i]) for i in ids if i in tokenizer.layout_ids})
    if reserved:
        raise PromptError(f"the prompt contains the image layout token(s) {', '.join(reserved)}; minivlm inserts "
                          f"those itself. Use {IMAGE_PLACEHOLDER} to say where an image goes.")
    if ids and ids[-1] == tokenizer.eos_id:  # the official processor drops a trailing eos
        ids = ids[:-1]
    n_placeholders = ids.count(tokenizer.placeholder_id)
    if n_placeholders and n_placeholders != len(images):
        raise PromptError(f"the prompt has {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} "
                          f"image(s) were given; use one placeholder per image (or none: images then go first)")
    if not n_placeholders:
        ids = [tokenizer.placeholder_id] * len(images) + ids
        # Departs from the official code: with 2+ images and no placeholder it places every later image's
        # features one position early (an offset bug). Inserting placeholders first places them correctly.

    # Split the text at the placeholders: n_images + 1 runs of text, an image block between each two.
    runs: list[list[int]] = [[]]
    for token in ids:
        if token == tokenizer.placeholder_id:
            runs.append([])
        else:
            runs[-1].append(token)
    tokens = [torch.tensor([tokenizer.bos_id] + runs[0], dtype=torch.long)]
    length = len(tokens[0])
    patches, masks, positions = [], [], []
    for image, run in zip(images, runs[1:]):
        tiled = tile_image(image, cfg.preprocessor, tokenizer.image_ids)
        patches.append(tiled.patches)
        masks.append(tiled.image_masks)
        # Positions inside the image block -> positions in the whole sequence (the BOS is already counted).
        positions.append(torch.where(tiled.patch_positions >= 0, tiled.patch_positions + length, -1))
        tokens += [tiled.token_ids, torch.tensor(run, dtype=torch.long)]
        length += len(tiled.token_ids) + len(run)

    input_ids = torch.cat(tokens)
    if len(input_ids) > cfg.text.max_sequence_length:
        raise PromptError(f"the prompt is {len(input_ids)} tokens long ({len(input_ids) - cfg.text.max_sequence_length} "
                          f"over the model's maximum of {cfg.text.max_sequence_length}); use fewer or smaller images "
                          f"(or a smaller max_crops) or a shorter text")
    v = cfg.vision
    if not images:  # text only: empty crop tensors with the right trailing shapes, so batches concatenate
        patches = [torch.zeros(0, v.grid**2, 3 * v.patch_size**2)]
        masks = [torch.zeros(0, v.grid**2, dtype=torch.long)]
        positions = [torch.zeros(0, v.pooled_per_crop, dtype=torch.long)]
    return {"input_ids": input_ids, "images": torch.cat(patches), "image_masks": torch.cat(masks),
            "image_input_idx": torch.cat(positions)}


def collate(samples: Sequence[dict[str, Tensor]], pad_id: int = 0) -> dict[str, Tensor]:
    """Left-pad a list of `preprocess` samples into one batch.

    input_ids [B, L] (pads = pad_id), attention_mask [B, L] bool; all crops of all samples concatenated
    (images [crops, 729, 588] ...) with crop_batch_index [crops] saying whose they are, and image_input_idx
    shifted by each row's left padding. No padding crops are made, so the ViT runs on real crops only.
    """
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
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "images": torch.cat([s["images"] for s in samples]),
        "image_masks": torch.cat([s["image_masks"] for s in samples]),
        "image_input_idx": torch.cat(shifted),
        "crop_batch_index": torch.cat(owners),
    }
