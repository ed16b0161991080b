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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .chat import load_chat_template, render_chat
from .config import ConfigError, ModelConfig, load_config, read_json
from .decoder import KVCache, add_image_features, decode, embed_tokens, lm_head
from .pooler import connector
from .processor import collate, preprocess
from .sampler import SamplingSettings, TextStream, next_token
from .tokenizer import Tokenizer
from .vit import vit_features
from .weights import check_device, load_weights


@dataclass
class GenerationResult:
    token_ids: list[int]  # the new tokens only (a stop token included if one ended the answer)
    text: str  # their text, special tokens skipped
    prompt_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # ttft_s, decode_s, decode_tok_s
    step_logits: Tensor | None = None  # [new tokens, vocab] float32, when asked for


def encode_images(weights: dict[str, Tensor], cfg: ModelConfig, images: Tensor, image_masks: Tensor) -> Tensor:
    """Crops [crops, 729, 588] -> ViT -> connector: [crops, 196, text width]."""
    features = vit_features(images, weights, cfg.vision)  # [crops, 729, 2·1152]
    return connector(features, image_masks, weights, cfg.vision)


def prefill(weights: dict[str, Tensor], cfg: ModelConfig, batch: dict[str, Tensor],
            cache: KVCache, features: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """A collated prompt batch (see processor.collate) through vision and decoder.

    Returns the final hidden states [B, L, width] (apply `lm_head` for logits) and the positions [B, L].
    `features`: the crops already encoded (`encode_images`' output), if the caller has them.
    Plain tensor code all the way: autograd flows through it (the tiny model's training uses it).
    """
    x = embed_tokens(batch["input_ids"], weights)  # [B, L, width]
    if len(batch["images"]):
        if features is None:
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
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} prompts but {len(images)} image lists")
        settings = SamplingSettings(temperature, top_k, top_p, repetition_penalty)
        batch = collate([self.preprocess(t, ims) for t, ims in zip(texts, images)])
        stream = TextStream(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        on_token = None if on_text is None else (lambda token: on_text(stream.push(token)))
        out = generate_tokens(self.weights, self.cfg, {k: v.to(self.device) for k, v in batch.items()},
                              max_new_tokens, settings, self.stop_ids if stop_ids is None else stop_ids,
                              self.dtype, seed, on_token, return_logits)
        if on_text is not None:
            on_text(stream.flush())
        results = []
        for b, row in enumerate(out.token_ids.tolist()):
            ids = [i for i in row if i >= 0]
            results.append(GenerationResult(
                token_ids=ids, text=self.tokenizer.decode(ids, skip_special_tokens=True),
                prompt_tokens=int(batch["attention_mask"][b].sum()), timings=out.timings,
                step_logits=out.step_logits[b, :len(ids)] if return_logits else None))
        return results


@dataclass
class Generation:
    token_ids: Tensor  # [B, steps]; -1 after a row has stopped
    timings: dict[str, float]  # ttft_s (prefill with vision + first token), decode_s, decode_tok_s
    step_logits: Tensor | None  # [B, steps, vocab] float32 when asked for


def _sync(device: torch.device) -> float:
    """A timestamp taken after the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.inference_mode()
def generate_tokens(weights: dict[str, Tensor], cfg: ModelConfig, batch: dict[str, Tensor], max_new_tokens: int,
                    settings: SamplingSettings, stop_ids: Sequence[int], dtype: torch.dtype, seed: int | None = None,
                    on_token: Callable[[int], None] | None = None, return_logits: bool = False) -> Generation:
    """The decoding loop on a collated batch: one prefill (images enter only here), then one token per step.

    Rows that produce a stop id are finished; the loop ends when all are, or after max_new_tokens.
    `on_token` receives each new token of row 0 as it is chosen (for streaming).
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    device = batch["input_ids"].device
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    n_rows, prompt_len = batch["input_ids"].shape
    if prompt_len + max_new_tokens > cfg.text.max_sequence_length:
        raise ValueError(f"the prompt ({prompt_len} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"maximum sequence length of {cfg.text.max_sequence_length}; lower max_new_tokens or "
                         "shorten the prompt")

    t_start = _sync(device)
    cache = KVCache.empty(cfg.text, n_rows, prompt_len + max_new_tokens, dtype, device)
    hidden, positions = prefill(weights, cfg, batch, cache)
    logits = lm_head(hidden[:, -1], weights)  # [B, vocab]: the only position whose logits we need
    # Repetition penalty looks at the prompt too; left-padding slots repeat a real token so they change nothing.
    seen = torch.where(batch["attention_mask"], batch["input_ids"], batch["input_ids"][:, -1:])
    next_position = positions[:, -1] + 1  # [B]
    finished = torch.zeros(n_rows, dtype=torch.bool, device=device)
    new_ids, step_logits = [], []
    for step in range(max_new_tokens):
        if return_logits:
            step_logits.append(logits)
        token = next_token(logits, settings, seen, generator)  # [B]
        if step == 0:
            t_first = _sync(device)
        new_ids.append(torch.where(finished, -1, token))  # -1 marks rows that had already stopped
        if on_token is not None and not finished[0]:
            on_token(int(token[0]))
        finished |= torch.isin(token, stops)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        seen = torch.cat([seen, token[:, None]], dim=1)
        hidden = decode(embed_tokens(token[:, None], weights), next_position[:, None],
                        torch.ones_like(finished)[:, None], weights, cfg.text, cache)
        logits = lm_head(hidden[:, -1], weights)
        next_position = next_position + 1
    t_end = _sync(device)
    decode_s, decoded = t_end - t_first, len(new_ids) - 1  # tokens after the first
    timings = {"ttft_s": t_first - t_start, "decode_s": decode_s,
               "decode_tok_s": decoded / decode_s if decoded and decode_s > 0 else 0.0}
    return Generation(torch.stack(new_ids, dim=1), timings,
                      torch.stack(step_logits, dim=1) if return_logits else None)


def _stop_ids(root: Path, tokenizer: Tokenizer) -> list[int]:
    """eos ids of generation_config.json when present, else the tokenizer's eos."""
    path = root / "generation_config.json"
    if path.is_file():
        eos = read_json(path).get("eos_token_id")
        if isinstance(eos, int) and not isinstance(eos, bool):
            return [eos]
        if isinstance(eos, list) and all(isinstance(i, int) for i in eos):
            return eos
        if eos is not None:
            raise ConfigError(f"{path}: eos_token_id should be an id or a list of ids, found {eos!r}")
    return [tokenizer.eos_id] if tokenizer.eos_id is not None else []


def load(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
         check_weights: bool = False) -> VLM:
    """Load an official-format Jina-VLM checkpoint folder (config.json, model.safetensors, tokenizer.json, ...)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; point minivlm at a checkpoint folder (see weights/README.md)")
    device = check_device(device)
    cfg = load_config(root)
    tokenizer = Tokenizer(root)
    weights = load_weights(root, cfg, dtype=dtype, device=device, check_finite=check_weights)
    return VLM(cfg, weights, tokenizer, load_chat_template(root), _stop_ids(root, tokenizer), device, dtype)
