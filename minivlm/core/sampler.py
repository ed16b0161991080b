"""The last step of the chain: next-token logits -> a token id, and token ids -> text safe to print.

Where it sits:  pixels -> tiler -> patch embed -> ViT -> pooler -> decoder -> **sampler**.
Mirrors what the official model leaves to Hugging Face's `generate` (JinaVLMForConditionalGeneration inherits
it): greedy search, and the repetition-penalty, temperature, top-k and top-p logits processors.

Greedy decoding (temperature 0) takes the argmax, as the official `generate` does by default. Sampling
applies, in Hugging Face's order: repetition penalty, temperature, top-k, top-p, then draws from the softmax.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off

    def __post_init__(self):
        for name in ("temperature", "top_p", "repetition_penalty"):  # NaN and "0.7" would fail deep in torch
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, numbers.Integral):
            raise ValueError(f"top_k must be an integer (0 = off), got {self.top_k!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")


def penalize_repeats(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL-style penalty on ids already in the sequence: positive logits / penalty, negative ones * penalty.

    Ids without a logit row are skipped: the image layout tokens of the prompt live in the decoder's extra
    embedding rows, past the LM head, and can never be generated anyway.
    """
    vocab = logits.shape[-1]
    # Mark the seen ids in a [B, vocab + 1] mask; every id past the head lands in the extra column, dropped after.
    hit = torch.zeros(*logits.shape[:-1], vocab + 1, dtype=torch.bool, device=logits.device)
    hit = hit.scatter(-1, seen.clamp(min=0, max=vocab), True)[..., :vocab]
    return torch.where(hit, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def filter_top_k_top_p(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """Set logits outside the top-k and outside the smallest set with probability >= top_p to -inf."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # mass before this token already enough
        drop_sorted[..., 0] = False  # the most likely token always stays (a top_p of 1e-300 is 0 in float32)
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: Tensor, settings: SamplingSettings, seen: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """logits [B, V] float32 -> token ids [B]. `seen` [B, T]: ids so far (for the repetition penalty)."""
    if settings.repetition_penalty != 1.0 and seen is not None and seen.numel():
        logits = penalize_repeats(logits, seen, settings.repetition_penalty)
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_top_k_top_p(apply_temperature(logits, settings.temperature), settings.top_k, settings.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / temperature; where a tiny temperature overflows float32 (1e-45: inf, or 0/0 = NaN), the row
    becomes what that temperature means in the limit: only its most likely token(s) left."""
    scaled = logits / temperature
    overflowed = ~torch.isfinite(scaled.max(dim=-1, keepdim=True).values)  # [B, 1]: +inf or NaN somewhere
    if not overflowed.any():
        return scaled
    best = logits == logits.max(dim=-1, keepdim=True).values
    return torch.where(overflowed, torch.where(best, 0.0, float("-inf")), scaled)


class TextStream:
    """Turns a growing list of token ids into printable text pieces, never splitting a UTF-8 character.

    Byte-level BPE tokens can end in the middle of a multi-byte character (a Chinese character is often two
    tokens); decoding then yields U+FFFD. We hold such a tail back until the next token completes it.
    """

    def __init__(self, decode):
        self.decode = decode  # ids -> str
        self.ids: list[int] = []
        self.printed = 0  # characters of decode(ids) already handed out

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.printed = text[self.printed:], len(text)
        return piece

    def flush(self) -> str:
        """Whatever is left at the end (a truly invalid byte sequence is printed as U+FFFD)."""
        text = self.decode(self.ids)
        piece, self.printed = text[self.printed:], len(text)
        return piece
