"""Chat prompts: messages -> the prompt string, with the checkpoint's own chat template when it has one.

Hugging Face renders `chat_template` (a Jinja2 program shipped with the tokenizer) in a sandbox with
`trim_blocks` and `lstrip_blocks`, passing the messages, `add_generation_prompt`, the special tokens and any
processor extras; Jina-VLM's processor adds `image_prompt_token="<|image|>"` and `always_start_with_space`. We
do the same. A checkpoint without a template gets plain ChatML, Qwen's format:

    <|im_start|>user\n<|image|>What is this?<|im_end|>\n<|im_start|>assistant\n

with one <|image|> per image at the start of the user's text.

Where the images go, as in Hugging Face messages: `content` is a string, or a list of parts
`{"type": "image"}` / `{"type": "text", "text": ...}`, each image part standing for the next image. A `<|image|>`
the user writes in the text also marks where an image goes (the template then adds none for it). Images that no
part or placeholder places go first in the first user message:

    [{"role": "user", "content": "What color is the circle?"}] + 1 image
        -> <|im_start|>user\n<|image|>What color is the circle?<|im_end|>...
    [{"role": "user", "content": "Compare <|image|> with <|image|>."}] + 2 images      (the user's placeholders)
    [{"role": "user", "content": [{"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "image"}]}]
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..core.tokens import IMAGE_PLACEHOLDER
from .config_json import read_json

CHATML_FALLBACK = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ image_prompt_token }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def load_chat_template(checkpoint_dir: str | Path) -> str | None:
    """The checkpoint's template: chat_template.jinja, chat_template.json, or tokenizer_config.json's entry."""
    root = Path(checkpoint_dir)
    if (root / "chat_template.jinja").is_file():
        return (root / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (root / name).is_file():
            template = read_json(root / name).get("chat_template")
            if isinstance(template, list):  # the list-of-named-templates form: take "default"
                template = {t.get("name"): t.get("template") for t in template}.get("default")
            if template:
                return template
    return None


def count_images(messages: list[dict]) -> int:
    """How many images the messages already place: image parts, and <|image|> written in the text."""
    count = 0
    for m in messages:
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "image":
                count += 1
            elif part.get("type") == "text" and isinstance(part.get("text"), str):
                count += part["text"].count(IMAGE_PLACEHOLDER)
    return count


def with_images(messages: list[dict], n_images: int) -> list[dict]:
    """Make sure the conversation places each image once: images that neither an image part nor a <|image|>
    written in the text places go before the first user message's text."""
    present = count_images(messages)
    missing = n_images - present
    if missing < 0:
        raise ValueError(f"the messages place {present} images (image parts and {IMAGE_PLACEHOLDER} in the text) "
                         f"but only {n_images} images were given")
    if missing == 0:
        return messages
    out = [dict(m) for m in messages]
    for m in out:
        if m.get("role") == "user":
            content = m["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            m["content"] = [{"type": "image"}] * missing + parts
            return out
    raise ValueError("images were given but the conversation has no user message to attach them to")


def render_chat(template: str | None, messages: list[dict], n_images: int = 0, add_generation_prompt: bool = True,
                special_tokens: dict[str, str] | None = None, always_start_with_space: bool = False) -> str:
    """Render messages with `template` (None = the ChatML fallback) the way transformers' apply_chat_template does."""
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"each message must be a dict with 'role' and 'content', got {m!r}")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = _raise
    try:
        return env.from_string(template or CHATML_FALLBACK).render(
            messages=with_images(messages, n_images), add_generation_prompt=add_generation_prompt,
            image_prompt_token=IMAGE_PLACEHOLDER, always_start_with_space=always_start_with_space,
            **(special_tokens or {}))
    except TemplateError as e:
        raise ValueError(f"the chat template failed to render: {e}") from None


def _raise(message: str):
    raise TemplateError(message)
