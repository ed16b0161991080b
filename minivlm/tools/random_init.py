"""Random weights and a synthetic prompt at the release's sizes: what the benchmark runs without the download.

Shared by `bench.py` (minivlm) and `bench_official.py` (the official code), so both run the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..core.batch import Batch, Sample, collate
from ..core.config import ModelConfig
from ..core.tiler import tile_image
from ..core.tokens import ImageTokenIds
from ..formats.image_io import to_rgb_array
from ..formats.weights import expected_shapes, unused_keys


def fill_random_(tensor: torch.Tensor, key: str, generator: torch.Generator) -> None:
    """In place, for the checkpoint tensor named `key`: norms 1 (weight) and 0 (bias), the rest N(0, 0.02), a
    scale that keeps activations sane."""
    if "lnorm" in key or "ln_f" in key:
        tensor.fill_(1.0 if key.endswith("weight") else 0.0)
        return
    # In row blocks: normal_ on a low-precision tensor draws in float32 first, and a float32 copy of the
    # 152k-row embedding would add 1.2 GB to the peak memory we report.
    rows = tensor.view(tensor.shape[0], -1) if tensor.dim() else tensor.view(1, 1)
    for block in rows.split(max(1, 2**24 // max(1, rows.shape[1]))):
        block.normal_(0, 0.02, generator=generator)


def random_weights(cfg: ModelConfig, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    """Every tensor the checkpoint would hold (minus the unused ones), random (`fill_random_`)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    weights, skip = {}, unused_keys(cfg)
    for key, shape in sorted(expected_shapes(cfg).items()):
        if key in skip:
            continue
        weights[key] = torch.empty(shape, dtype=dtype, device=device)
        fill_random_(weights[key], key, generator)
    return weights


def synthetic_image(width: int, height: int) -> Image.Image:
    """A smooth colour field with some structure (its content does not change the timing)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def random_init_batch(cfg: ModelConfig, image: Image.Image, n_text: int = 30, seed: int = 0) -> Batch:
    """Random text ids around the image block, the image ids in the first additional rows, as in the release.

    30 text tokens (the BOS included) + 1,744 image tokens = the official measurement's 1,774 for 1176x910.
    """
    vocab = cfg.text.embedding_size
    ids = ImageTokenIds(start=vocab, end=vocab + 1, patch=vocab + 2, col=vocab + 3)
    tiled = tile_image(to_rgb_array(image), cfg, ids)
    text = torch.randint(0, cfg.text.vocab_size, (n_text,), generator=torch.Generator().manual_seed(seed))
    sample = Sample(input_ids=torch.cat([text[:1], tiled.token_ids, text[1:]]),
                    images=tiled.patches, image_masks=tiled.image_masks,
                    image_input_idx=torch.where(tiled.patch_positions >= 0, tiled.patch_positions + 1, -1))
    return collate([sample])
