"""Generation: the whole diagram once over the prompt (the prefill), then one token at a time.

Where it sits: it runs the chain  pixels -> tiler -> patch embed -> ViT -> pooler -> decoder -> sampler,
from the processor's tensors on: `encode_images` is the vision half (ViT + connector), `prefill` adds the
visual vectors to the prompt's embeddings and runs the decoder over it, and `generate_tokens` is the KV-cache
loop. Paper: architecture (the model as a whole). Mirrors the official `JinaVLMForConditionalGeneration`
(modeling_jvlm.py), whose images enter only at the first forward of Hugging Face's `generate`, as here.

Timing, streaming, stop ids and logit capture live in the caller (`minivlm.vlm`): this loop only yields tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .batch import Batch
from .config import ModelConfig
from .decoder import KVCache, add_image_features, embed_tokens, lm_head, run_decoder
from .layers import hooks
from .pooler import connector
from .sampler import SamplingSettings, next_token
from .vit import vit_features


def encode_images(w: dict[str, Tensor], cfg: ModelConfig, images: Tensor, image_masks: Tensor,
                  run_block: Callable[[Tensor, int], Tensor] | None = None) -> Tensor:
    """Crops [crops, 729, 588] -> ViT -> connector: [crops, 196, text width] (`run_block`: see `vit_features`).

    Crops never meet on the way: a crop's patches attend only to each other, the pooler's windows lie inside one
    crop. So an installed `hooks.encode_images` (minivlm.accel, on CPU) may run them a few at a time, with the
    same result, when no `run_block` is given."""
    if run_block is None and hooks.encode_images is not None and (
            fast := hooks.encode_images(w, cfg, images, image_masks)) is not None:
        return fast
    features = vit_features(images, w, cfg.vision, run_block)  # [crops, 729, 2·1152]
    return connector(features, image_masks, w, cfg.vision)


def prefill(w: dict[str, Tensor], cfg: ModelConfig, batch: Batch, cache: KVCache, start: int = 0,
            features: Tensor | None = None, last_only: bool = False) -> tuple[Tensor, Tensor]:
    """A batch of prompts (or of follow-up turns, written after `start` cached positions) through vision and
    decoder: the final hidden states [B, L, width] (`lm_head` gives logits) and their positions [B, L].

    `features`: the crops already encoded (`encode_images`' output), if the caller has them.
    `last_only`: the last position's hidden states alone, [B, 1, width] (see `run_decoder`).
    Plain tensor code all the way: autograd flows through it (the trainer uses it).
    """
    x = embed_tokens(batch["input_ids"], w)  # [B, L, width]
    if len(batch["images"]):
        if features is None:
            features = encode_images(w, cfg, batch["images"], batch["image_masks"])
        x = add_image_features(x, features, batch["image_input_idx"], batch["crop_batch_index"])
    valid = batch["attention_mask"]
    # Each row counts its positions from its own first real token: left padding takes none.
    earlier = cache.valid[:, :start].sum(-1, keepdim=True)  # [B, 1]: real tokens already in the cache
    positions = earlier + (valid.long().cumsum(-1) - 1).clamp(min=0)  # [B, L]
    return run_decoder(x, positions, valid, w, cfg.text, cache, start, last_only), positions


def generate_tokens(w: dict[str, Tensor], cfg: ModelConfig, batch: Batch, cache: KVCache,
                    settings: SamplingSettings, generator: torch.Generator | None = None,
                    start: int = 0, features: Tensor | None = None,
                    earlier_ids: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Prefill `batch` at cache position `start`, then yield (next token ids [B], their logits [B, vocab]) step
    after step, without end: the caller stops when it has what it wants (a stop id, enough tokens).

    The last token yielded is not yet in the cache: a caller that continues the sequence later (a conversation)
    starts its next prefill with it. `features`: the batch's crops already encoded (see `prefill`);
    `earlier_ids` [B, start]: the ids already in the cache, which the repetition penalty counts too.
    """
    hidden, positions = prefill(w, cfg, batch, cache, start, features, last_only=True)  # [B, 1, width]
    # The repetition penalty looks at the prompt too; left-padding slots repeat a real token so they change nothing.
    seen = torch.where(batch["attention_mask"], batch["input_ids"], batch["input_ids"][:, -1:])  # [B, L]
    if earlier_ids is not None:
        seen = torch.cat([earlier_ids.to(seen.device), seen], dim=1)
    position = positions[:, -1:] + 1  # [B, 1]: the next token's RoPE position
    end = start + batch["input_ids"].shape[1]  # the next token's cache position
    while True:
        logits = lm_head(hidden[:, -1], w)  # [B, vocab]: the only position whose logits we need
        token = next_token(logits, settings, seen, generator)  # [B]
        yield token, logits
        seen = torch.cat([seen, token[:, None]], dim=1)
        real = torch.ones_like(token, dtype=torch.bool)[:, None]  # [B, 1]
        hidden = run_decoder(embed_tokens(token[:, None], w), position, real, w, cfg.text, cache, start=end)
        position, end = position + 1, end + 1
