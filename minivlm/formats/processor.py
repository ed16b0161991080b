"""Prompt assembly: text + images -> the token ids and tensors the model consumes (the official processor).

Mirrors `JinaVLMProcessor` (processing_jvlm.py) around the tiler (`minivlm.core.tiler`).

The text is tokenized as-is (special tokens written in it, like <|im_start|>, become their ids). Each
<|image|> placeholder is REPLACED by that image's block of layout tokens from the tiler, and each kept visual
vector's <im_patch> position is recorded in `image_input_idx`. Then the BOS (Qwen has none, so <|endoftext|>)
is prepended and every index moves by one. A batch of such samples is left-padded by `core.batch.collate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.batch import Sample
from ..core.config import ModelConfig
from ..core.tiler import TiledImage, tile_image
from ..core.tokens import IMAGE_PLACEHOLDER, LAYOUT_TOKENS
from .image_io import ImageError, to_rgb_array
from .tokenizer import Tokenizer, TokenizerError


class PromptError(ValueError):
    """The prompt and images cannot be assembled as the user asked (counts, length, reserved tokens)."""


def check_prompt(text: str, n_images: int) -> None:
    """Refuse, before any work, a request that cannot be assembled. Cheap: the CLI calls it before loading.

    Counting in the text equals counting token ids: the tokenizer splits special tokens out before anything else.
    """
    check_text(text, "the prompt")
    if not text.strip() and not n_images:
        raise PromptError("the prompt is empty and there is no image: there is nothing to answer")
    reserved = [token for token in LAYOUT_TOKENS if token in text]
    if reserved:
        raise PromptError(f"the prompt contains the image layout token(s) {', '.join(reserved)}; minivlm inserts "
                          f"those itself. Use {IMAGE_PLACEHOLDER} to say where an image goes.")
    n_placeholders = text.count(IMAGE_PLACEHOLDER)
    if n_placeholders and n_placeholders != n_images:
        raise PromptError(f"the prompt has {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {n_images} "
                          f"image(s) were given; use one placeholder per image (or none: images then go first)")


def check_text(text: str, what: str) -> None:
    """A str of valid Unicode: not bytes or None, and no lone surrogates (which cannot be encoded as UTF-8, and
    are what Python makes of invalid UTF-8 on a command line)."""
    if not isinstance(text, str):
        hint = "; decode it first: text.decode('utf-8')" if isinstance(text, (bytes, bytearray)) else ""
        raise PromptError(f"{what} must be a str, got {type(text).__name__}{hint}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PromptError(f"{what} is not valid Unicode text: character {e.start} is a lone surrogate "
                          f"({text[e.start]!r}); invalid UTF-8 on the command line, or a string cut in the middle "
                          "of a character?") from None


def check_prompt_length(text: str, tokenizer: Tokenizer, cfg: ModelConfig) -> None:
    """Refuse, before tokenizing, text longer than the model's whole context could hold.

    No token covers more than `tokenizer.max_token_chars` characters (the longest entry in its vocabulary: a
    byte-level token covers at most that many bytes), so longer text cannot fit in max_sequence_length tokens and
    refusing it refuses nothing that would run. It also keeps the tokenizer library away from its own limits
    (10 million spaces hit a regex limit in it and panic).
    """
    limit = cfg.text.max_sequence_length * tokenizer.max_token_chars
    if len(text) > limit:
        raise PromptError(f"the prompt is {len(text):,} characters long: more than the model's maximum of "
                          f"{cfg.text.max_sequence_length:,} tokens could hold (at most {limit:,} characters); "
                          "shorten it")


def preprocess(text: str, images: Sequence, tokenizer: Tokenizer, cfg: ModelConfig,
               tile_cache: dict[int, TiledImage] | None = None) -> Sample:
    """One sample: input_ids [L]; images [crops, 729, 588]; image_masks [crops, 729]; image_input_idx [crops, 196].

    Images may be paths, PIL images or uint8 [H, W, 3] arrays. Dropped (margin) cells get -1 in image_input_idx;
    the official code writes a large negative sentinel. `tile_cache`: the tiled images by their index in
    `images`, used and filled (a conversation assembles the same images again every turn; same cfg assumed).
    """
    check_prompt(text, len(images))
    check_prompt_length(text, tokenizer, cfg)
    ids = tokenizer.encode(text)
    if ids and ids[-1] == tokenizer.eos_id:  # the official processor drops a trailing eos
        ids = ids[:-1]
    if tokenizer.placeholder_id not in ids:
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
    length, image_tokens = len(tokens[0]), 0
    patches, masks, positions = [], [], []
    for k, (image, run) in enumerate(zip(images, runs[1:])):
        tiled = tile_cache.get(k) if tile_cache is not None else None
        if tiled is None:
            try:
                tiled = tile_image(to_rgb_array(image), cfg, tokenizer.image_ids)
            except ImageError as e:
                raise ImageError(f"image {k + 1} of {len(images)}: {e}") from None
            if tile_cache is not None:
                tile_cache[k] = tiled
        patches.append(tiled.patches)
        masks.append(tiled.image_masks)
        # Positions inside the image block -> positions in the whole sequence (the BOS is already counted).
        positions.append(torch.where(tiled.patch_positions >= 0, tiled.patch_positions + length, -1))
        tokens += [tiled.token_ids, torch.tensor(run, dtype=torch.long)]
        length += len(tiled.token_ids) + len(run)
        image_tokens += len(tiled.token_ids)

    input_ids = torch.cat(tokens)
    check_length(len(input_ids), image_tokens, len(images), cfg)
    rows = cfg.text.embedding_size + cfg.text.additional_vocab_size
    if int(input_ids.max()) >= rows:  # would fail deep inside the embedding lookup
        raise TokenizerError(f"token id {int(input_ids.max())} ({tokenizer.decode([int(input_ids.max())])!r}) has no "
                             f"embedding row (the model has {rows}): the tokenizer does not belong to this checkpoint")
    v = cfg.vision
    if not images:  # text only: empty crop tensors with the right trailing shapes, so batches concatenate
        patches = [torch.zeros(0, v.grid**2, 3 * v.patch_size**2)]
        masks = [torch.zeros(0, v.grid**2, dtype=torch.long)]
        positions = [torch.zeros(0, v.pooled_per_crop, dtype=torch.long)]
    return Sample(input_ids=input_ids, images=torch.cat(patches), image_masks=torch.cat(masks),
                  image_input_idx=torch.cat(positions))


def check_length(n_tokens: int, image_tokens: int, n_images: int, cfg: ModelConfig) -> None:
    """Refuse a prompt longer than the model's context, saying by how much and what to cut."""
    limit = cfg.text.max_sequence_length
    if n_tokens > limit:
        raise PromptError(f"the prompt is {n_tokens} tokens long ({image_tokens} for {n_images} image(s), "
                          f"{n_tokens - image_tokens} text), {n_tokens - limit} over the model's maximum of {limit}; "
                          "use fewer or smaller images, fewer crops per image (max_crops is "
                          f"{cfg.preprocessor.max_crops}: --max-crops N, or config.with_max_crops), or a shorter text")
