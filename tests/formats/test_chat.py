"""chat.py: the checkpoint's chat template rendered like transformers does, or the ChatML fallback."""

import json
import shutil

import pytest
from conftest import FIXTURE_DIR

import minivlm
from minivlm.formats.chat import load_chat_template, render_chat


def test_chatml_fallback_puts_one_image_token_per_image_before_the_text():
    prompt = render_chat(None, [{"role": "user", "content": "What is this?"}], n_images=2)
    assert prompt == "<|im_start|>user\n<|image|><|image|>What is this?<|im_end|>\n<|im_start|>assistant\n"


def test_multi_turn():
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                {"role": "assistant", "content": "red"},
                {"role": "user", "content": "And the shape?"}]
    assert render_chat(None, messages, n_images=1) == (
        "<|im_start|>user\n<|image|>Colour?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n"
        "<|im_start|>user\nAnd the shape?<|im_end|>\n<|im_start|>assistant\n")


def test_too_many_image_parts():
    with pytest.raises(ValueError, match="place 2 images .* but only 1 images"):
        render_chat(None, [{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}], n_images=1)


def test_placeholder_written_by_the_user_marks_where_the_image_goes():
    """Issue #14: `<|image|>` in a chat message is that image's place; the template adds none for it."""
    prompt = render_chat(None, [{"role": "user", "content": "Look: <|image|> What color?"}], n_images=1)
    assert prompt == "<|im_start|>user\nLook: <|image|> What color?<|im_end|>\n<|im_start|>assistant\n"
    parts = [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " with <|image|>"}]
    assert render_chat(None, [{"role": "user", "content": parts}], n_images=2).count("<|image|>") == 2
    with pytest.raises(ValueError, match="place 2 images"):
        render_chat(None, [{"role": "user", "content": "<|image|><|image|>"}], n_images=1)


def test_chat_with_a_user_placeholder_runs_and_equals_content_parts(vlm):
    image = FIXTURE_DIR / "images" / "rgb_378x378.png"
    written = vlm.chat([{"role": "user", "content": "What is <|image|> this?"}], [image], max_new_tokens=3)
    parts = [{"type": "text", "text": "What is "}, {"type": "image"}, {"type": "text", "text": " this?"}]
    as_parts = vlm.chat([{"role": "user", "content": parts}], [image], max_new_tokens=3)
    assert written.token_ids == as_parts.token_ids and written.prompt_tokens == as_parts.prompt_tokens


# A template in the style of Hugging Face chat templates, using the processor's extra variables.
TEMPLATE = ("{% for m in messages %}{{ bos_token if loop.first }}[{{ m['role'] }}]"
            "{% if m['content'] is string %}{{ ' ' if always_start_with_space }}{{ m['content'] }}"
            "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}{{ image_prompt_token }}"
            "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}\n{% endfor %}"  # trim_blocks eats this newline
            "{% if add_generation_prompt %}[assistant]{% endif %}")


@pytest.mark.parametrize("where", ["chat_template.jinja", "chat_template.json", "tokenizer_config.json"])
def test_checkpoint_template_is_found_and_rendered(tmp_path, where):
    for f in FIXTURE_DIR.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    if where == "chat_template.jinja":
        (tmp_path / where).write_text(TEMPLATE)
    elif where == "chat_template.json":
        (tmp_path / where).write_text(json.dumps({"chat_template": TEMPLATE}))
    else:
        config = json.loads((tmp_path / where).read_text())
        (tmp_path / where).write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    assert load_chat_template(tmp_path) == TEMPLATE
    vlm = minivlm.load(tmp_path)
    # The fixture's processor_config.json sets always_start_with_space; the BOS of this tokenizer is its eos.
    assert vlm.render_chat([{"role": "user", "content": "Hi"}], n_images=1) == \
        "<|endoftext|>[user]<|image|>Hi[assistant]"
    # A plain-string message keeps its content as is, after the processor's always_start_with_space.
    assert vlm.render_chat([{"role": "user", "content": "Hi"}]) == "<|endoftext|>[user] Hi[assistant]"


def test_fixture_has_no_template():
    assert load_chat_template(FIXTURE_DIR) is None
