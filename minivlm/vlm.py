"""`minivlm.load` and the `VLM` it returns: the official files in, answers out.

`minivlm.load(path_or_id)` reads the official Jina-VLM files (config, safetensors, tokenizer, chat template) with
`minivlm.formats` and returns a `VLM`, which runs the model in `minivlm.core`. Its methods are the public API:

    batch = vlm.preprocess(text, images)     # the official processor's outputs (no batch dimension)
    feats = vlm.encode_images(batch)         # connector output [crops, 196, 2048]
    logits = vlm.logits(batch)               # float32 [L, vocab]
    out = vlm.generate(text, images)         # .token_ids, .text (text passed as-is, like the processor)
    out = vlm.chat(messages, images)         # the chat template first
    conv = vlm.conversation()                # multi-turn, keeping the KV cache (conversation.py)

Generation is one prefill over the whole prompt (the only place images enter), then one token per step
against the KV cache (`core.generation.generate_tokens`); this file adds what a user sees around that loop:
stop ids, streaming, timings and, when asked, the logits of every step.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import accel
from .core.batch import Batch, Sample, collate, to_device
from .core.config import ModelConfig
from .core.decoder import KVCache, lm_head
from .core.generation import encode_images, generate_tokens, prefill
from .core.sampler import SamplingSettings, TextStream
from .devices import check_device, check_dtype, choose_dtype, device_time
from .formats.chat import find_chat_template, render_chat
from .formats.config_json import generation_stop_ids, load_config
from .formats.processor import preprocess
from .formats.tokenizer import Tokenizer
from .formats.weights import load_weights
from .hub import resolve_checkpoint

if TYPE_CHECKING:
    from .conversation import Conversation

# The KV cache starts with room for the prompt and this many new tokens, and grows (doubling) if the answer is
# longer: a generous max_new_tokens costs nothing until it is used.
INITIAL_ANSWER_ROOM = 256


@dataclass
class GenerationResult:
    """One prompt's answer: its new token ids, their text, and how long it took."""

    token_ids: list[int]  # the new tokens only (a stop token included if one ended the answer)
    text: str  # their text, special tokens skipped
    prompt_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # ttft_s, decode_s, decode_tok_s
    step_logits: Tensor | None = None  # [new tokens, vocab] float32, when asked for


@dataclass
class Generation:
    """A batch's raw output: the token ids per row, timings, and the logits of each step when asked for."""

    token_ids: Tensor  # [B, steps]; -1 after a row has stopped
    timings: dict[str, float]  # ttft_s (prefill with vision + first token), decode_s, decode_tok_s
    step_logits: Tensor | None  # [B, steps, vocab] float32 when asked for


SEED_RANGE = 2**64  # torch.Generator.manual_seed takes 0 .. 2**64 - 1


def check_generation_args(max_new_tokens: int, seed: int | None, stop_ids: Sequence[int]) -> list[int]:
    """ValueErrors naming the argument for a wrong type or range (torch would fail later, or quietly differ);
    returns the stop ids as a list of ints."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or not 0 <= seed < SEED_RANGE):
        raise ValueError(f"seed must be None or an integer from 0 to 2**64 - 1, got {seed!r}")
    if isinstance(stop_ids, (str, bytes)) or not isinstance(stop_ids, (Sequence, set, frozenset, Tensor)):
        raise ValueError(f"stop_ids must be a list of token ids (e.g. [151645]), got {stop_ids!r}")
    ids = stop_ids.tolist() if isinstance(stop_ids, Tensor) else list(stop_ids)
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 0]
    if bad:
        raise ValueError(f"stop_ids must be non-negative integer token ids, got {bad[0]!r} in {stop_ids!r}")
    return [int(i) for i in ids]


@torch.inference_mode()
def generate_ids(weights: dict[str, Tensor], cfg: ModelConfig, batch: Batch, *, max_new_tokens: int,
                 settings: SamplingSettings, stop_ids: Sequence[int], dtype: torch.dtype, seed: int | None = None,
                 on_token: Callable[[int], None] | None = None, return_logits: bool = False,
                 cache: KVCache | None = None, start: int = 0, features: Tensor | None = None,
                 earlier_ids: Tensor | None = None) -> Generation:
    """Answer a collated batch: `generate_tokens` until every row has produced a stop id or max_new_tokens.

    `on_token` receives each new token of row 0 as it is chosen (for streaming). To continue a sequence (a
    conversation's next turn), pass its `cache` with `start` positions already filled and their ids as
    `earlier_ids` [B, start] (for the repetition penalty), and `features` for the batch's crops if encoded.
    """
    stop_ids = check_generation_args(max_new_tokens, seed, stop_ids)
    max_new_tokens = int(max_new_tokens)
    device = batch["input_ids"].device
    n_rows, prompt_len = batch["input_ids"].shape
    if start + prompt_len + max_new_tokens > cfg.text.max_sequence_length:
        raise ValueError(f"the prompt ({start + prompt_len} tokens) plus max_new_tokens ({max_new_tokens}) exceeds "
                         f"the model's maximum sequence length of {cfg.text.max_sequence_length}; lower "
                         "max_new_tokens or shorten the prompt (in a conversation: start a new one)")
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(int(seed)) if seed is not None else None

    t_start = device_time(device)
    room = start + prompt_len + min(max_new_tokens, INITIAL_ANSWER_ROOM)
    if cache is None:
        cache = KVCache.empty(cfg.text, n_rows, room, dtype, device)
    cache.reserve(room)
    finished = torch.zeros(n_rows, dtype=torch.bool, device=device)
    new_ids, step_logits = [], []
    tokens = generate_tokens(weights, cfg, batch, cache, settings, generator, start, features, earlier_ids)
    for step, (token, logits) in enumerate(tokens):
        if step == 0:
            t_first = device_time(device)
        if return_logits:
            step_logits.append(logits)
        new_ids.append(torch.where(finished, -1, token))  # -1 marks rows that had already stopped
        if on_token is not None and not finished[0]:
            on_token(int(token[0]))
        finished |= torch.isin(token, stops)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
    t_end = device_time(device)
    decode_s, decoded = t_end - t_first, len(new_ids) - 1  # tokens after the first
    timings = {"ttft_s": t_first - t_start, "decode_s": decode_s,
               "decode_tok_s": decoded / decode_s if decoded and decode_s > 0 else 0.0}
    return Generation(torch.stack(new_ids, dim=1), timings,
                      torch.stack(step_logits, dim=1) if return_logits else None)


ONE_IMAGE = (str, Path, Image.Image, np.ndarray, Tensor)  # what `images=` may be instead of a list of them


def image_list(images) -> list:
    """`images` as a list: one image (a path, a PIL image, an array) is accepted as a list of one."""
    if isinstance(images, ONE_IMAGE):
        return [images]
    if isinstance(images, (bytes, dict)) or not hasattr(images, "__iter__"):
        raise ValueError(f"images must be a list of images (paths, PIL images or uint8 [H, W, 3] arrays), "
                         f"got {type(images).__name__}")
    return list(images)


class VLM:
    """A loaded Jina-VLM checkpoint: its config, tensors, tokenizer and chat template, and the methods to run it."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, Tensor], tokenizer: Tokenizer,
                 chat_template: str | None, stop_ids: list[int], device: torch.device, dtype: torch.dtype,
                 chat_template_source: str | None = None):
        self.cfg, self.weights, self.tokenizer = cfg, weights, tokenizer
        self.chat_template, self.stop_ids = chat_template, stop_ids
        self.chat_template_source = chat_template_source  # the file, named in its errors
        self.device, self.dtype = device, dtype

    # -- vision -------------------------------------------------------------------------------------------

    def preprocess(self, text: str, images: Sequence = ()) -> Sample:
        """input_ids [L], images [crops, 729, 588], image_masks [crops, 729], image_input_idx [crops, 196].

        `images`: a list of paths, PIL images or uint8 [H, W, 3] arrays (one of them alone is fine too)."""
        return preprocess(text, image_list(images), self.tokenizer, self.cfg)

    @torch.inference_mode()
    def encode_images(self, batch: Sample | Batch) -> Tensor:
        """Crops -> ViT -> connector: [crops, 196, text width]."""
        return encode_images(self.weights, self.cfg, batch["images"].to(self.device),
                             batch["image_masks"].to(self.device))

    # -- language -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def logits(self, sample: Sample) -> Tensor:
        """float32 logits [L, vocab] at every position of one `preprocess` sample."""
        if not isinstance(sample, dict) or "input_ids" not in sample:
            raise ValueError(f"logits takes a sample from vlm.preprocess(text, images), got {type(sample).__name__}; "
                             "e.g. vlm.logits(vlm.preprocess('What is this?', [image]))")
        batch = to_device(collate([sample]), self.device)
        cache = KVCache.empty(self.cfg.text, 1, batch["input_ids"].shape[1], self.dtype, self.device)
        hidden, _ = prefill(self.weights, self.cfg, batch, cache)
        return lm_head(hidden[0], self.weights)

    # -- generation ---------------------------------------------------------------------------------------

    def generate(self, text: str, images: Sequence = (), max_new_tokens: int = 256, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
                 stop_ids: Sequence[int] | None = None, on_text: Callable[[str], None] | None = None,
                 return_logits: bool = False) -> GenerationResult:
        """Answer one prompt. `text` is used verbatim (no chat template), as the official processor does."""
        return self.generate_batch([text], [images], max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
                                   stop_ids=stop_ids, on_text=on_text, return_logits=return_logits)[0]

    def conversation(self, **settings) -> "Conversation":
        """A multi-turn conversation that keeps its KV cache: `conv.ask(text, images=[...])` answers each question,
        prefilling only its new tokens and encoding each image once. `settings`: any of `generate`'s
        (max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop_ids, return_logits)."""
        from .conversation import Conversation  # it imports this module

        return Conversation(self, **settings)

    def chat(self, messages: list[dict], images: Sequence = (), **generate_kwargs) -> GenerationResult:
        """Apply the chat template to `messages` (one <|image|> per image), then generate."""
        images = image_list(images)
        return self.generate(self.render_chat(messages, len(images)), images, **generate_kwargs)

    def render_chat(self, messages: list[dict], n_images: int = 0) -> str:
        """The prompt string the checkpoint's chat template makes of `messages`, ready for `generate`."""
        special = {"bos_token": self.tokenizer.decode([self.tokenizer.bos_id]),
                   "eos_token": self.tokenizer.decode([self.tokenizer.eos_id]) if self.tokenizer.eos_id is not None else ""}
        return render_chat(self.chat_template, messages, n_images, special_tokens=special,
                           always_start_with_space=self.cfg.always_start_with_space,
                           template_source=self.chat_template_source)

    def generate_batch(self, texts: Sequence[str], images: Sequence[Sequence], max_new_tokens: int = 256,
                       temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                       seed: int | None = None, stop_ids: Sequence[int] | None = None,
                       on_text: Callable[[str], None] | None = None,
                       return_logits: bool = False) -> list[GenerationResult]:
        """Answer several prompts at once, left-padded into one batch; each gets the tokens it would get alone
        (greedy). `on_text` streams the first prompt's answer."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValueError(f"texts must be a list of prompts, got {type(texts).__name__} (for one prompt: generate)")
        if not texts:
            raise ValueError("generate_batch needs at least one prompt, got an empty list")
        images = image_list(images)  # per prompt: a list of images, or one image (preprocess takes both)
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} prompts but {len(images)} image lists")
        settings = SamplingSettings(temperature, top_k, top_p, repetition_penalty)
        check_generation_args(max_new_tokens, seed, self.stop_ids if stop_ids is None else stop_ids)
        batch = collate([self.preprocess(t, ims) for t, ims in zip(texts, images)])
        stream = TextStream(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        on_token = None if on_text is None else (lambda token: on_text(stream.push(token)))
        out = generate_ids(self.weights, self.cfg, to_device(batch, self.device), max_new_tokens=max_new_tokens,
                           settings=settings, stop_ids=self.stop_ids if stop_ids is None else stop_ids,
                           dtype=self.dtype, seed=seed, on_token=on_token, return_logits=return_logits)
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


def load(path: str | Path, dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu",
         check_weights: bool = False, revision: str | None = None, compile: bool = False) -> VLM:
    """Load an official-format Jina-VLM checkpoint: a folder (config.json, model.safetensors, tokenizer.json,
    ...), "minivlm-tiny" (the demo model shipped inside the package) or a Hugging Face id such as
    "jinaai/jina-vlm" (downloaded once into the Hugging Face cache, at `revision` if given; needs
    huggingface_hub).

    dtype: "auto" (the default: the stored dtype where the device runs it natively, else float32), "float32",
    "bfloat16", or a torch.dtype. compile: run the ViT's blocks through torch.compile (minivlm.accel.compiled_vit;
    the first image compiles for tens of seconds, each later one runs faster).
    """
    device = check_device(device)
    root = resolve_checkpoint(path, revision)
    cfg = load_config(root)  # first: a folder that is not a checkpoint is said so by the config check
    dtype = check_dtype(choose_dtype(dtype, root, device)[0])
    tokenizer = Tokenizer(root)
    weights = load_weights(root, cfg, dtype=dtype, device=device, check_finite=check_weights)
    accel.install_for(device, dtype, compile)
    template, template_source = find_chat_template(root)
    return VLM(cfg, weights, tokenizer, template, generation_stop_ids(root, tokenizer.eos_id), device, dtype,
               chat_template_source=template_source)
