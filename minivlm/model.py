"""The whole model: load a checkpoint, then pixels -> tiler -> ViT -> connector -> decoder -> sampler.

`minivlm.load(path)` reads the official Jina-VLM files (config, safetensors, tokenizer, chat template) and
returns a `VLM`. Its methods are the public API:

    batch = vlm.preprocess(text, images)     # the official processor's outputs (no batch dimension)
    feats = vlm.encode_images(batch)         # connector output [crops, 196, 2048]
    logits = vlm.logits(batch)               # float32 [L, vocab]
    out = vlm.generate(text, images)         # .token_ids, .text (text passed as-is, like the processor)
    out = vlm.chat(messages, images)         # the chat template first

Generation is one prefill over the whole prompt (the only place images enter), then one token per step
against a preallocated KV cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .chat import load_chat_template, render_chat
from .config import ModelConfig, load_config
from .decoder import KVCache, add_image_features, decode, embed_tokens, lm_head
from .pooler import connector
from .processor import collate, preprocess
from .sampler import SamplingSettings, TextStream, next_token
from .tokenizer import Tokenizer
from .vit import vit_features
from .weights import load_weights


@dataclass
class GenerationResult:
    token_ids: list[int]  # the new tokens only (a stop token included if one ended the answer)
    text: str  # their text, special tokens skipped
    prompt_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # vision_s, prefill_s, decode_s, decode_tok_s
    step_logits: Tensor | None = None  # [new tokens, vocab] float32, when asked for


def encode_images(weights: dict[str, Tensor], cfg: ModelConfig, images: Tensor, image_masks: Tensor) -> Tensor:
    """Crops [crops, 729, 588] -> ViT -> connector: [crops, 196, text width]."""
    features = vit_features(images, weights, cfg.vision)  # [crops, 729, 2·1152]
    return connector(features, image_masks, weights, cfg.vision)


def prefill(weights: dict[str, Tensor], cfg: ModelConfig, batch: dict[str, Tensor],
            cache: KVCache) -> tuple[Tensor, Tensor]:
    """A collated prompt batch (see processor.collate) through vision and decoder.

    Returns the final hidden states [B, L, width] (apply `lm_head` for logits) and the positions [B, L].
    Plain tensor code all the way: autograd flows through it (the tiny model's training uses it).
    """
    x = embed_tokens(batch["input_ids"], weights)  # [B, L, width]
    if len(batch["images"]):
        features = encode_images(weights, cfg, batch["images"], batch["image_masks"])
        x = add_image_features(x, features, batch["image_input_idx"], batch["crop_batch_index"])
    valid = batch["attention_mask"]
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # left padding: each row counts from its first token
    return decode(x, positions, valid, weights, cfg.text, cache), positions


class VLM:
    def __init__(self, cfg: ModelConfig, weights: dict[str, Tensor], tokenizer: Tokenizer,
                 chat_template: str | None, stop_ids: list[int], device: torch.device, dtype: torch.dtype):
        self.cfg, self.weights, self.tokenizer = cfg, weights, tokenizer
        self.chat_template, self.stop_ids = chat_template, stop_ids
        self.device, self.dtype = device, dtype

    # -- vision -------------------------------------------------------------------------------------------

    def preprocess(self, text: str, images: Sequence = ()) -> dict[str, Tensor]:
        """input_ids [L], images [crops, 729, 588], image_masks [crops, 729], image_input_idx [crops, 196]."""
        return preprocess(text, list(images), self.tokenizer, self.cfg)

    @torch.inference_mode()
    def encode_images(self, batch: dict[str, Tensor]) -> Tensor:
        """Crops -> ViT -> connector: [crops, 196, text width]."""
        return encode_images(self.weights, self.cfg, batch["images"].to(self.device),
                             batch["image_masks"].to(self.device))

    # -- language -----------------------------------------------------------------------------------------

    def _new_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache.empty(self.cfg.text, batch, capacity, self.dtype, self.device)

    def _prefill(self, batch: dict[str, Tensor], cache: KVCache) -> tuple[Tensor, Tensor]:
        return prefill(self.weights, self.cfg, {k: v.to(self.device) for k, v in batch.items()}, cache)

    @torch.inference_mode()
    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """float32 logits [L, vocab] at every position of one `preprocess` sample."""
        collated = collate([batch])
        hidden, _ = self._prefill(collated, self._new_cache(1, collated["input_ids"].shape[1]))
        return lm_head(hidden[0], self.weights)

    # -- generation ---------------------------------------------------------------------------------------

    def generate(self, text: str, images: Sequence = (), max_new_tokens: int = 256, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
                 stop_ids: Sequence[int] | None = None, on_text: Callable[[str], None] | None = None,
                 return_logits: bool = False) -> GenerationResult:
        """Answer one prompt. `text` is used verbatim (no chat template), as the official processor does."""
        return self.generate_batch([text], [images], max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                                   seed, stop_ids, on_text, return_logits)[0]

    def chat(self, messages: list[dict], images: Sequence = (), **generate_kwargs) -> GenerationResult:
        """Apply the chat template to `messages` (one <|image|> per image), then generate."""
        return self.generate(self.render_chat(messages, len(images)), images, **generate_kwargs)

    def render_chat(self, messages: list[dict], n_images: int = 0) -> str:
        special = {"bos_token": self.tokenizer.decode([self.tokenizer.bos_id]),
                   "eos_token": self.tokenizer.decode([self.tokenizer.eos_id]) if self.tokenizer.eos_id is not None else ""}
        return render_chat(self.chat_template, messages, n_images, special_tokens=special,
                           always_start_with_space=self.cfg.always_start_with_space)

    @torch.inference_mode()
    def generate_batch(self, texts: Sequence[str], images: Sequence[Sequence], max_new_tokens: int = 256,
                       temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                       seed: int | None = None, stop_ids: Sequence[int] | None = None,
                       on_text: Callable[[str], None] | None = None,
                       return_logits: bool = False) -> list[GenerationResult]:
        """Answer several prompts at once, left-padded into one batch; each gets the tokens it would get alone
        (greedy). `on_text` streams the first prompt's answer."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} prompts but {len(images)} image lists")
        settings = SamplingSettings(temperature, top_k, top_p, repetition_penalty)
        stops = torch.tensor(list(self.stop_ids if stop_ids is None else stop_ids), dtype=torch.long, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None

        t0 = time.perf_counter()
        batch = collate([self.preprocess(t, ims) for t, ims in zip(texts, images)])
        n_rows, prompt_len = batch["input_ids"].shape
        cache = self._new_cache(n_rows, prompt_len + max_new_tokens)
        hidden, positions = self._prefill(batch, cache)
        logits = lm_head(hidden[:, -1], self.weights)  # [B, vocab]
        t_first = time.perf_counter()

        valid = batch["attention_mask"].to(self.device)
        seen = torch.where(valid, batch["input_ids"].to(self.device), batch["input_ids"][:, -1:].to(self.device))
        next_position = positions[:, -1] + 1  # [B]
        finished = torch.zeros(n_rows, dtype=torch.bool, device=self.device)
        new_ids: list[Tensor] = []
        step_logits: list[Tensor] = []
        stream = TextStream(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        for step in range(max_new_tokens):
            if return_logits:
                step_logits.append(logits)
            token = next_token(logits, settings, seen, generator)  # [B]
            new_ids.append(torch.where(finished, -1, token))  # -1 marks rows that had already stopped
            if on_text is not None and not finished[0]:
                on_text(stream.push(int(token[0])))
            finished |= torch.isin(token, stops)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            seen = torch.cat([seen, token[:, None]], dim=1)
            x = embed_tokens(token[:, None], self.weights)  # [B, 1, width]
            hidden = decode(x, next_position[:, None], torch.ones_like(finished)[:, None], self.weights,
                            self.cfg.text, cache)
            logits = lm_head(hidden[:, -1], self.weights)
            next_position = next_position + 1
        if on_text is not None:
            on_text(stream.flush())
        t_end = time.perf_counter()

        # The vision time is inside the prefill; report it separately by timing encode_images on its own is
        # what the bench does. Here: time to first token and the decode rate.
        generated = torch.stack(new_ids, dim=1).tolist()  # [B, steps]
        decode_s = t_end - t_first
        results = []
        for b, row in enumerate(generated):
            ids = [i for i in row if i >= 0]
            timings = {"prefill_s": t_first - t0, "decode_s": decode_s,
                       "decode_tok_s": (len(generated[0]) - 1) / decode_s if decode_s > 0 and len(row) > 1 else 0.0}
            results.append(GenerationResult(
                token_ids=ids, text=self.tokenizer.decode(ids, skip_special_tokens=True),
                prompt_tokens=int(valid[b].sum()), timings=timings,
                step_logits=torch.stack([lg[b] for lg in step_logits][:len(ids)]) if return_logits else None))
        return results


def _stop_ids(root: Path, tokenizer: Tokenizer) -> list[int]:
    """eos ids of generation_config.json when present, else the tokenizer's eos."""
    path = root / "generation_config.json"
    if path.is_file():
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        if eos is not None:
            return [eos] if isinstance(eos, int) else list(eos)
    return [tokenizer.eos_id] if tokenizer.eos_id is not None else []


def load(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
         check_weights: bool = False) -> VLM:
    """Load an official-format Jina-VLM checkpoint folder (config.json, model.safetensors, tokenizer.json, ...)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; point minivlm at a checkpoint folder (see weights/README.md)")
    cfg = load_config(root)
    tokenizer = Tokenizer(root)
    device = torch.device(device)
    weights = load_weights(root, cfg, dtype=dtype, device=device, check_finite=check_weights)
    return VLM(cfg, weights, tokenizer, load_chat_template(root), _stop_ids(root, tokenizer), device, dtype)
