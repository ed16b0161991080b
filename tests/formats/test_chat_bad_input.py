"""Chat templates of the wrong shape, templates that fail while rendering, messages of the wrong shape
(formats/chat.py). Every failure is one line that names the template's file."""

import json

import pytest
from bad_input import checkpoint

import minivlm
from minivlm.formats.chat import ChatTemplateError, find_chat_template, render_chat
from minivlm.formats.processor import PromptError

HI = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("template, message", [
    (5, "tokenizer_config.json: chat_template should be a Jinja template string, found 5"),
    ({"default": "x"}, "chat_template should be a Jinja template string, found {'default': 'x'}"),
    ([{"name": "tool_use", "template": "x"}], "one named \"default\"; found the names ['tool_use']"),
    (["x"], "chat_template is a list, so it should hold"),
])
def test_template_entries_of_the_wrong_shape(tmp_path, template, message):
    root = checkpoint(tmp_path, {"tokenizer_config.json": lambda c: c.update(chat_template=template)})
    with pytest.raises(ChatTemplateError) as err:
        find_chat_template(root)
    assert message in str(err.value)


def test_named_templates_take_default(tmp_path):
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    root = checkpoint(tmp_path, {"tokenizer_config.json": lambda c: c.update(chat_template=named)})
    assert find_chat_template(root) == ("D", f"{root / 'tokenizer_config.json'}: chat_template")


@pytest.mark.parametrize("template, message", [
    ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "RecursionError"),
    ("{% include 'other.jinja' %}", "no loader for this environment specified"),
    ("{% import 'macros.jinja' as m %}", "no loader for this environment specified"),
    ("{{ 'a' * 10**10 }}", "1 x 10000000000 items is more than a chat template needs"),
    ("{{ 2 ** (10 ** 9) }}", "2 ** 1000000000 is a larger number than a chat template needs"),
    ("{{ 10.0 ** 1000 }}", "OverflowError"),
    ("{{ messages[0]['content'] + 1 }}", "TypeError"),
    ("{{ raise_exception('only user and assistant roles') }}", "only user and assistant roles"),
    ("{% for %}", "Expected an expression, got 'end of statement block' at line 1"),
    ("{{ ''.__class__.__mro__ }}", "__class__"),  # the sandbox stays: no access to internals
])
def test_any_render_error_is_one_line_naming_the_file(tmp_path, template, message):
    (tmp_path / "chat_template.jinja").write_text(template)
    source = find_chat_template(tmp_path)[1]
    with pytest.raises(ChatTemplateError) as err:
        render_chat(find_chat_template(tmp_path)[0], HI, template_source=source)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'chat_template.jinja'}: the chat template failed to render")
    assert message in text and len(text.splitlines()) == 1


def test_vlm_names_the_template_file(tmp_path):
    root = checkpoint(tmp_path)
    (root / "chat_template.jinja").write_text("{{ 1 // 0 }}")
    vlm = minivlm.load(root)
    with pytest.raises(ChatTemplateError, match=r"chat_template.jinja: the chat template failed to render"):
        vlm.chat(HI)


@pytest.mark.parametrize("messages, message", [
    ("What is this?", "messages must be a list of {'role': ..., 'content': ...} dicts, got str"),
    ({"role": "user", "content": "hi"}, "messages must be a list"),
    ([{"role": "user"}], "each message must be a dict with 'role' and 'content'"),
    ([{"role": "user", "content": 5}], "message 1's content must be text or a list of parts, got int"),
    ([{"role": "user", "content": None}], "message 1's content must be text or a list of parts, got NoneType"),
    ([{"role": "user", "content": [{"type": "video"}]}], "each part must be {'type': 'text', 'text': ...}"),
    ([{"role": "user", "content": ["hi"]}], "each part must be"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "message 1's text part must be a str, got int"),
    ([{"role": 1, "content": "hi"}], "message 1's role must be a str"),
    ([{"role": "user", "content": "caf\udce9"}], "message 1's content is not valid Unicode text"),
])
def test_messages_of_the_wrong_shape(vlm, messages, message):
    with pytest.raises(PromptError) as err:
        vlm.chat(messages)
    assert message in str(err.value)


def test_chat_template_json_with_nan(tmp_path):
    (tmp_path / "chat_template.json").write_text('{"chat_template": "x", "v": NaN}')
    with pytest.raises(ChatTemplateError, match="chat_template.json is not valid JSON: NaN"):
        find_chat_template(tmp_path)
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    assert render_chat(find_chat_template(tmp_path)[0], HI) == "Hi"
