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

import functools
import json
import numbers
from pathlib import Path

from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..core.tokens import IMAGE_PLACEHOLDER
from .files import read_json
from .files import not_a_file
from .processor import PromptError, check_text

# A chat template writes a prompt of a few kB: a `*` or `**` making far more than this is refused while rendering
# (`'a' * 10**10` would take 10 GB, `2 ** (10**9)` minutes), the one place a sandboxed template can still go wild.
MAX_RENDERED = 10_000_000  # characters or items a `*` may make; bits a `**` may make


class ChatTemplateError(ValueError):
    """The checkpoint's chat template is not a template, or failed while rendering the messages."""


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
    return find_chat_template(checkpoint_dir)[0]


def find_chat_template(checkpoint_dir: str | Path) -> tuple[str | None, str | None]:
    """(the checkpoint's template, the file it came from), or (None, None): the ChatML fallback is used."""
    root = Path(checkpoint_dir)
    jinja = root / "chat_template.jinja"
    if jinja.exists():
        problem = not_a_file(jinja)
        if problem:
            raise ChatTemplateError(f"{jinja}: {problem}")
        try:
            return jinja.read_text(encoding="utf-8"), str(jinja)
        except UnicodeDecodeError as e:
            raise ChatTemplateError(f"{jinja} is not UTF-8 text ({e})") from None
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (root / name).exists():
            template = _template_entry(read_json(root / name, ChatTemplateError), root / name)
            if template:
                return template, f"{root / name}: chat_template"
    return None, None


def _template_entry(config: dict, path: Path) -> str | None:
    """chat_template as a string, or the "default" one of a list of {"name", "template"} (transformers' forms)."""
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if len(named) != len(template) or "default" not in named:
            raise ChatTemplateError(f"{path}: chat_template is a list, so it should hold {{\"name\", \"template\"}} "
                                    f"objects, one named \"default\"; found the names {sorted(map(str, named))}")
        template = named["default"]
    if template is not None and not isinstance(template, str):
        raise ChatTemplateError(f"{path}: chat_template should be a Jinja template string, found {template!r}")
    return template


def check_messages(messages: list[dict]) -> None:
    """A list of {"role": str, "content": str or a list of {"type": "text", "text": str} / {"type": "image"}}."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise PromptError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got "
                          f"{type(messages).__name__}; for one question: [{{'role': 'user', 'content': text}}]")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise PromptError(f"each message must be a dict with 'role' and 'content', got {m!r}")
        check_text(m["role"], f"message {k + 1}'s role")
        content = m["content"]
        if isinstance(content, str):
            check_text(content, f"message {k + 1}'s content")
            continue
        if not isinstance(content, (list, tuple)):
            raise PromptError(f"message {k + 1}'s content must be text or a list of parts, got "
                              f"{type(content).__name__}")
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "image"):
                raise PromptError(f"message {k + 1}: each part must be {{'type': 'text', 'text': ...}} or "
                                  f"{{'type': 'image'}}, got {part!r}")
            if part["type"] == "text":
                check_text(part.get("text"), f"message {k + 1}'s text part")


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
                special_tokens: dict[str, str] | None = None, always_start_with_space: bool = False,
                template_source: str | None = None) -> str:
    """Render messages with `template` (None = the ChatML fallback) the way transformers' apply_chat_template does.

    Whatever goes wrong inside the template (raise_exception, a division by zero, recursion, an include with
    no loader, a type error) is one ChatTemplateError naming `template_source`, the file it came from.
    """
    check_messages(messages)
    messages = with_images(messages, n_images)
    source = template_source or ("the chat template" if template else "the ChatML fallback template")
    try:
        return _compiled(template or CHATML_FALLBACK).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            image_prompt_token=IMAGE_PLACEHOLDER, always_start_with_space=always_start_with_space,
            **(special_tokens or {}))
    except Exception as e:  # noqa: BLE001 (a template is a program: any error it raises is the template's)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        kind = "" if isinstance(e, TemplateError) else f"{type(e).__name__}: "
        if isinstance(e, TemplateSyntaxError) and e.lineno:
            first_line += f" at line {e.lineno}"
        raise ChatTemplateError(f"{source}: the chat template failed to render ({kind}{first_line or 'no message'})"
                                ) from None


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with `*` and `**` refusing results past MAX_RENDERED (see above)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_RENDERED:
                    raise SecurityError(f"{len(seq)} x {times} items is more than a chat template needs")
        if operator == "**" and isinstance(left, numbers.Integral) and isinstance(right, numbers.Integral) \
                and right > 0 and int(left).bit_length() * int(right) > MAX_RENDERED:
            raise SecurityError(f"{left} ** {right} is a larger number than a chat template needs")
        return super().call_binop(context, operator, left, right)


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """The template compiled once: compiling takes ~20 ms, and the trainer renders every conversation's prefixes."""
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def _raise(message: str):
    raise TemplateError(message)
