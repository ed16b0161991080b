"""Training data: JSONL records (or generated ones) -> tokenized samples whose loss covers the assistant only.

Two JSONL formats, one record per line, image paths relative to the JSONL file:

  LLaVA:          {"image": "a.jpg" | "images": [...], "conversations": [{"from": "human", "value": "<image>\\nQ"},
                   {"from": "gpt", "value": "A"}, ...]}
  chat messages:  {"images": ["a.jpg"], "messages": [{"role": "user", "content": [{"type": "image"},
                   {"type": "text", "text": "Q"}]}, {"role": "assistant", "content": "A"}]}

Records without images are text-only (the paper mixes ~15% of them into alignment). A source may also be a
Python function `module:function(rng: random.Random) -> record` (chat-messages format; PIL images allowed), for
generated data such as the demo model's shapes. A bad record (missing or broken image, no assistant turn, too
long, malformed) is reported with its file and line, then skipped or fatal (`on_bad`), never silently dropped.

The loss mask: the chat is rendered with the checkpoint's template; an assistant message's span is what rendering
it adds after the generation prompt of the messages before it (content and end-of-turn token, e.g. <|im_end|>).
Tokens whose characters start inside such a span are the targets; everything else (system, user, images,
template scaffolding) is -100.
"""

from __future__ import annotations

import importlib
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..core.config import ModelConfig
from ..formats.chat import render_chat
from ..formats.image_io import ImageError
from ..formats.processor import PromptError, preprocess
from ..formats.tokenizer import Tokenizer, TokenizerError

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class DataError(ValueError):
    """A bad record, with where it is: 'file.jsonl:12: reason'."""


@dataclass
class Record:
    messages: list[dict]  # chat-messages format, content as a list of parts
    images: list  # paths (resolved) or PIL images
    where: str  # "data.jsonl:12" or "module:function draw 3/7"


def _parts(text: str) -> list[dict]:
    """LLaVA text with <image> markers -> content parts (the newline that follows a marker goes with it)."""
    parts: list[dict] = []
    for k, piece in enumerate(text.split("<image>")):
        if k:
            parts.append({"type": "image"})
            piece = piece[1:] if piece.startswith("\n") else piece
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def normalize(obj, where: str, base: Path | None) -> Record:
    """A parsed JSON record (either format) -> Record, or DataError saying what is wrong."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    if "conversations" in obj:
        images = obj.get("images", [obj["image"]] if "image" in obj else [])
        messages = []
        for turn in obj["conversations"]:
            if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
                raise DataError(f"{where}: each conversation turn needs 'from' (human|gpt|system) and a 'value' string, "
                                f"found {str(turn)[:80]}")
            messages.append({"role": ROLES[turn["from"]], "content": _parts(turn["value"])})
    elif "messages" in obj:
        images, messages = obj.get("images", []), []
        for m in obj["messages"]:
            if not isinstance(m, dict) or m.get("role") not in ROLES or "content" not in m:
                raise DataError(f"{where}: each message needs a 'role' (user|assistant|system) and 'content', "
                                f"found {str(m)[:80]}")
            content = m["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(parts, list) or any(not isinstance(p, dict) or p.get("type") not in ("image", "text")
                                                  for p in parts):
                raise DataError(f"{where}: content must be a string or a list of {{'type': 'image'|'text'}} parts")
            messages.append({"role": ROLES[m["role"]], "content": parts})
    else:
        raise DataError(f"{where}: expected 'conversations' (LLaVA) or 'messages' (chat), found keys {sorted(obj)}")
    if isinstance(images, (str, Path)) or not isinstance(images, list):
        images = [images]
    if not any(m["role"] == "assistant" and any(p.get("text") for p in m["content"]) for m in messages):
        raise DataError(f"{where}: no assistant turn with text: nothing to learn from")
    n_parts = sum(p["type"] == "image" for m in messages for p in m["content"])
    if n_parts > len(images):
        raise DataError(f"{where}: {n_parts} image markers but {len(images)} images")
    resolved = []
    for image in images:
        if isinstance(image, (str, Path)):
            path = Path(image) if base is None else base / image
            if not path.is_file():
                raise DataError(f"{where}: image {path} not found")
            image = path
        resolved.append(image)
    return Record(messages, resolved, where)


def report(error: DataError, on_bad: str) -> None:
    if on_bad == "error":
        raise error
    print(f"skipping bad record: {error}", file=sys.stderr)


def read_jsonl(path: Path, on_bad: str) -> list[Record]:
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
                records.append(normalize(obj, f"{path}:{n}", path.parent))
            except DataError as e:
                report(e, on_bad)
    if not records:
        raise DataError(f"{path}: no usable record")
    return records


@dataclass
class Source:
    """One weighted data source of a stage: a JSONL file's records or a generator function."""

    name: str
    weight: float = 1.0
    text_only: bool = False
    records: list[Record] = field(default_factory=list)
    function: object = None

    def draw(self, rng: random.Random, on_bad: str) -> Record | None:
        if self.function is None:
            return rng.choice(self.records)
        where = f"{self.name} draw {rng.random():.6f}"
        try:
            return normalize(self.function(rng), where, None)
        except DataError as e:
            report(e, on_bad)
            return None


def load_source(spec: dict, on_bad: str, cache: dict) -> Source:
    """{"path": "x.jsonl" | "python": "module:function", "weight": w, "text_only": bool} -> Source."""
    weight, text_only = float(spec.get("weight", 1.0)), bool(spec.get("text_only", False))
    if "python" in spec:
        module, _, name = spec["python"].partition(":")
        return Source(spec["python"], weight, text_only, function=getattr(importlib.import_module(module), name))
    path = Path(spec["path"])
    if path not in cache:
        cache[path] = read_jsonl(path, on_bad)
    return Source(str(path), weight, text_only, records=cache[path])


def step_draws(sources: list[Source], share: float | None, single: bool, seed: int, step: int,
               batch: int) -> list[tuple[Source, str]]:
    """The global batch of one optimizer step: (source, that sample's own seed) per slot, from the seed and the
    step only, so it is the same for any number of processes (each then takes its slice)."""
    rng = random.Random(f"{seed}/{step}")
    text = [s for s in sources if s.text_only]
    other = [s for s in sources if not s.text_only]

    def pick() -> Source:
        pool = (text if rng.random() < share else other) if share is not None and text and other else sources
        return rng.choices(pool, weights=[s.weight for s in pool])[0]

    chosen = pick() if single else None  # single-source batch: one source for the whole step
    return [(chosen or pick(), f"{seed}/{step}/{slot}") for slot in range(batch)]


class Encoder:
    """Record -> sample: `preprocess` outputs plus targets [L] (next token id on assistant tokens, else -100)."""

    def __init__(self, tokenizer: Tokenizer, cfg: ModelConfig, template: str | None, max_length: int,
                 always_start_with_space: bool = False):
        self.tokenizer, self.cfg, self.template, self.max_length = tokenizer, cfg, template, max_length
        eos = tokenizer.decode([tokenizer.eos_id]) if tokenizer.eos_id is not None else ""
        self.special = {"bos_token": tokenizer.decode([tokenizer.bos_id]), "eos_token": eos}
        self.space = always_start_with_space

    def render(self, messages: list[dict], n_images: int, prompt: bool) -> str:
        return render_chat(self.template, messages, n_images, add_generation_prompt=prompt,
                           special_tokens=self.special, always_start_with_space=self.space)

    def spans(self, record: Record) -> tuple[str, list[tuple[int, int]]]:
        """The rendered chat and each assistant message's character span in it."""
        n, messages = len(record.images), record.messages
        full = self.render(messages, n, False)
        spans = []
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            # images all attach to the first user turn when unmarked, so every prefix keeps the full image count
            before = self.render(messages[:k], n, True) if k else ""
            through = self.render(messages[:k + 1], n, False).rstrip()
            if not full.startswith(before) or not full.startswith(through):
                raise DataError(f"{record.where}: the chat template renders turn {k + 1} differently inside the "
                                "whole conversation; cannot locate the assistant tokens")
            spans.append((len(before), len(through)))
        return full, spans

    def __call__(self, record: Record) -> dict[str, Tensor]:
        try:
            text, spans = self.spans(record)
        except ValueError as e:  # the template refused the conversation
            raise DataError(f"{record.where}: {e}") from None
        try:
            sample = preprocess(text, record.images, self.tokenizer, self.cfg)
        except (ImageError, PromptError, TokenizerError, OSError) as e:
            raise DataError(f"{record.where}: {e}") from None
        ids = sample["input_ids"]
        if len(ids) > self.max_length:
            raise DataError(f"{record.where}: {len(ids)} tokens, over max_length {self.max_length}")
        encoding = self.tokenizer.hf.encode(text, add_special_tokens=False)
        starts = [start for token, (start, _) in zip(encoding.ids, encoding.offsets)
                  if token != self.tokenizer.placeholder_id]
        # preprocess keeps the text tokens in order and inserts BOS + image blocks (layout ids only) around them
        text_positions = [i for i, t in enumerate(ids.tolist()) if i > 0 and t not in self.tokenizer.layout_ids]
        assert len(text_positions) == len(starts), (record.where, len(text_positions), len(starts))
        in_answer = torch.zeros(len(ids), dtype=torch.bool)
        for pos, start in zip(text_positions, starts):
            in_answer[pos] = any(a <= start < b for a, b in spans)
        targets = torch.where(in_answer[1:], ids[1:], -100)
        return dict(sample, targets=torch.cat([targets, torch.tensor([-100])]))  # position i predicts token i + 1


def pad_targets(samples: list[dict[str, Tensor]]) -> Tensor:
    """Targets left-padded like core.batch.collate pads the ids: [B, L]."""
    longest = max(len(s["targets"]) for s in samples)
    return torch.stack([torch.nn.functional.pad(s["targets"], (longest - len(s["targets"]), 0), value=-100)
                        for s in samples])
