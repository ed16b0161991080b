"""A multi-turn conversation that keeps its KV cache between questions: `vlm.conversation()`.

    conv = vlm.conversation(max_new_tokens=64)
    conv.ask("What color is the circle?", images=["shapes.png"]).text     # 'green'
    conv.ask("And the square?").text                                      # prefills only this question

Why: answering a follow-up with `vlm.chat(whole history)` re-encodes every image and re-reads the whole
conversation, which for a photo on a CPU is many seconds per question. Here each turn renders the WHOLE history
with the checkpoint's chat template (so the template decides the text, exactly as for `vlm.chat`), tokenizes it
with the images, and compares the ids with those already in the KV cache: only the part after the longest
common prefix is run through the decoder, at its cache position. That part is normally the template's closing
tokens of the last answer plus the new question; images of earlier turns are never encoded again (their
features were added at their positions when those were first run, and live on in the cache; the connector's
output is also kept, for the rare case where a template rewrites history inside an image block).

If the rendered history does not start with the cached ids (a template that rewrites earlier turns, or an
answer whose text tokenizes differently from the generated ids), the common prefix is shorter and more is
recomputed, down to the whole prompt: the result is always what `vlm.chat` on the whole history computes, token
for token (greedy), with logits equal up to float rounding (tests/test_conversation.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .core.batch import Batch, to_device
from .core.decoder import KVCache
from .core.sampler import SamplingSettings, TextStream
from .core.tokens import IMAGE_PLACEHOLDER
from .formats.image_io import to_rgb_array
from .formats.processor import preprocess
from .devices import device_time
from .vlm import GenerationResult, generate_ids

if TYPE_CHECKING:
    from .vlm import VLM

SAMPLING = tuple(f.name for f in fields(SamplingSettings))  # temperature, top_k, top_p, repetition_penalty
SETTINGS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop_ids",
            "return_logits")


class Conversation:
    """Messages so far, their images, and the KV cache holding them; `ask` adds a question and answers it.

    Generation settings given here (max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed,
    stop_ids, return_logits) apply to every question; `ask(..., **settings)` overrides them for one question.
    Ctrl-C (KeyboardInterrupt) during an answer keeps the part already produced in the history, then propagates.
    """

    def __init__(self, vlm: VLM, **settings):
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise ValueError(f"unknown generation setting(s) {', '.join(sorted(unknown))}; expected some of "
                             f"{', '.join(SETTINGS)}")
        self.vlm, self.settings = vlm, {"max_new_tokens": 256, **settings}
        self._sampling(self.settings)  # bad values fail here, not at the first question
        self.reset()

    def reset(self) -> None:
        """Forget everything: the messages, the images and the cache."""
        self.messages: list[dict] = []
        self.images: list = []
        self._features: Tensor | None = None  # connector output of every crop so far [crops, tokens, width]
        self._tiles: dict = {}  # each image's tiles by its index, so later turns do not tile it again
        self._cache: KVCache | None = None
        self._cached_ids: list[int] = []  # the ids whose keys and values are in the cache, from position 0

    @property
    def cached_tokens(self) -> int:
        """How many positions of the conversation the KV cache holds."""
        return len(self._cached_ids)

    def ask(self, text: str, images: Sequence = (), on_text: Callable[[str], None] | None = None,
            **settings) -> GenerationResult:
        """Add a user question (with its own images: paths, PIL images or arrays) and answer it.

        A `<|image|>` in `text` marks where an image goes (one per image); without one, the images go first.
        Returns the answer as `vlm.chat` does; `timings` adds `vision_s` (new images only) and `prefill_tokens`
        (how many prompt tokens were run: the rest came from the cache).
        """
        images = [to_rgb_array(image) for image in images]  # decoded (and below tiled) once
        messages = self.messages + [{"role": "user", "content": user_content(text, len(images))}]
        all_images = self.images + images
        options = {**self.settings, **settings}
        sampling = self._sampling(options)
        vlm = self.vlm
        # Tiles of images from a turn that did not happen (refused, interrupted before answering) are dropped.
        self._tiles = {k: tiles for k, tiles in self._tiles.items() if k < len(self.images)}
        prompt = vlm.render_chat(messages, len(all_images))
        sample = preprocess(prompt, all_images, vlm.tokenizer, vlm.cfg, tile_cache=self._tiles)
        ids = sample["input_ids"].tolist()
        reuse = min(common_prefix(self._cached_ids, ids), len(ids) - 1)  # the decoder needs at least one new id

        t0 = device_time(vlm.device)
        features = self._all_features(sample)
        vision_s = device_time(vlm.device) - t0
        batch, crops = suffix_batch(sample, reuse, vlm.device)
        if self._cache is None:
            # Empty: generate_ids reserves the prompt and the answer's first room in one allocation (a cache the
            # size of the prompt would be copied into a larger one before its first token).
            self._cache = KVCache.empty(vlm.cfg.text, 1, 0, vlm.dtype, vlm.device)
        self._cached_ids = ids[:reuse]  # all the cache is sure to hold if the prefill is interrupted
        answer: list[int] = []
        stream = TextStream(lambda t: vlm.tokenizer.decode(t, skip_special_tokens=True))

        def on_token(token: int) -> None:
            answer.append(token)
            if on_text is not None:
                on_text(stream.push(token))

        stops = options.get("stop_ids")
        try:
            out = generate_ids(vlm.weights, vlm.cfg, batch, max_new_tokens=options["max_new_tokens"],
                               settings=sampling, stop_ids=vlm.stop_ids if stops is None else stops,
                               dtype=vlm.dtype, seed=options.get("seed"), on_token=on_token,
                               return_logits=options.get("return_logits", False), cache=self._cache, start=reuse,
                               features=None if features is None else features[crops],
                               earlier_ids=torch.tensor([ids[:reuse]], dtype=torch.long, device=vlm.device))
        finally:  # also on Ctrl-C: keep what was answered, so the conversation can go on
            if answer:  # before the flush: a second Ctrl-C arriving in on_text must not lose the turn
                self._commit(messages, all_images, features, ids, answer)
            if on_text is not None:
                on_text(stream.flush())
        timings = {**out.timings, "ttft_s": out.timings["ttft_s"] + vision_s, "vision_s": vision_s,
                   "prefill_tokens": float(len(ids) - reuse)}
        return GenerationResult(token_ids=answer, text=self.messages[-1]["content"], prompt_tokens=len(ids),
                                timings=timings, step_logits=out.step_logits[0] if out.step_logits is not None
                                else None)

    def _commit(self, messages: list[dict], images: list, features: Tensor | None, ids: list[int],
                answer: list[int]) -> None:
        """The turn happened: remember its question, its (maybe partial) answer, its images and the cached ids."""
        # The last token chosen is not in the cache yet (generate_tokens): it is part of the next prefill.
        self._cached_ids = ids + answer[:-1]
        text = self.vlm.tokenizer.decode(answer, skip_special_tokens=True)
        self.messages = messages + [{"role": "assistant", "content": text}]
        self.images, self._features = images, features

    def _sampling(self, options: dict) -> SamplingSettings:
        """The sampling part of the settings (SamplingSettings' own defaults for the ones not given)."""
        return SamplingSettings(**{name: options[name] for name in SAMPLING if name in options})

    def _all_features(self, sample) -> Tensor | None:
        """The connector output of every crop of the conversation: the kept ones, then the new images' crops
        (None while there is no image)."""
        known = 0 if self._features is None else len(self._features)
        new_crops = sample["images"][known:]
        if not len(new_crops):
            return self._features
        new = self.vlm.encode_images({"images": new_crops, "image_masks": sample["image_masks"][known:]})
        return new if self._features is None else torch.cat([self._features, new])


def user_content(text: str, n_images: int) -> str | list[dict]:
    """A question's message content: the text as is when it places its images with <|image|> (or has none),
    else image parts first, then the text."""
    placed = text.count(IMAGE_PLACEHOLDER)
    if placed and placed != n_images:
        raise ValueError(f"the question has {placed} {IMAGE_PLACEHOLDER} placeholder(s) but {n_images} image(s) "
                         "were given with it; use one per image, or none (images then go first)")
    if placed or not n_images:
        return text
    return [{"type": "image"}] * n_images + [{"type": "text", "text": text}]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def suffix_batch(sample, start: int, device: torch.device) -> tuple[Batch, Tensor]:
    """The part of one sample from position `start` on, as a batch of one, and which crops it needs (bool [crops]).

    A crop is needed when one of its visual vectors lands at or after `start`; its cells before `start` (already
    in the cache) become -1, like margin cells, and the others move by -start.
    """
    idx = sample["image_input_idx"]
    crops = (idx >= start).any(dim=1)  # [crops]
    shifted = torch.where(idx[crops] >= start, idx[crops] - start, -1)
    input_ids = sample["input_ids"][start:]
    batch = Batch(input_ids=input_ids[None], attention_mask=torch.ones(1, len(input_ids), dtype=torch.bool),
                  images=sample["images"][crops], image_masks=sample["image_masks"][crops],
                  image_input_idx=shifted, crop_batch_index=torch.zeros(int(crops.sum()), dtype=torch.long))
    return to_device(batch, device), crops.to(device)
