"""The README's Python snippets run as they are, in order, and print what their comments say.

Each ```python block of README.md is executed in one shared namespace (later blocks use earlier names), from
another working directory; every `print(...)  # expected` line must print `expected`.
"""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def expected_output(block: str) -> list[str]:
    return [m.group(1).strip() for line in block.splitlines() if (m := re.match(r"print\(.*\)\s+#\s*(.*)$", line))]


def test_readme_has_the_commands_users_need():
    text = README.read_text(encoding="utf-8")
    for command in ("python -m minivlm.chat", "--model jinaai/jina-vlm", "make weights", "make lab",
                    "--prompt-file", "vlm.conversation("):
        assert command in text, command
    assert len(BLOCKS) >= 4


def test_python_snippets_run_and_print_what_they_say(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(BLOCKS, 1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        assert out.getvalue().splitlines() == expected_output(block), f"block {number}:\n{block}"


@pytest.mark.parametrize("name", ["VLM", "GenerationResult", "load"])
def test_public_names_have_docstrings(name):
    import minivlm

    assert len((getattr(minivlm, name).__doc__ or "").strip()) > 30


def test_public_methods_have_docstrings():
    from minivlm.conversation import Conversation
    from minivlm.formats.chat import render_chat
    from minivlm.vlm import VLM

    for obj in (VLM.render_chat, VLM.generate_batch, VLM.conversation, VLM.chat, VLM.generate, VLM.logits,
                VLM.preprocess, VLM.encode_images, Conversation, Conversation.ask, Conversation.reset, render_chat):
        assert len((obj.__doc__ or "").strip()) > 30, obj.__qualname__
