"""`python -m minivlm.generate`: the command users run, end to end on the fixture checkpoint."""

import json
import subprocess
import sys

import pytest
from conftest import CASES, FIXTURE_DIR


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minivlm.generate", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("name", ["single_tile_378", "two_images"])
def test_json_prints_the_fixture_tokens(name):
    case = next(c for c in CASES if c["name"] == name)
    images = [arg for image in case["images"] for arg in ("--image", str(FIXTURE_DIR / image["file"]))]
    done = run_cli("--model", str(FIXTURE_DIR), *images, "--prompt", case["prompt"], "--raw",
                   "--max-new-tokens", "8", "--temperature", "0", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["token_ids"] == case["generated_ids"]  # no eos among them, so all 8 come out
    assert result["prompt_tokens"] == case["seq_len"]
    assert set(result) >= {"text", "token_ids", "prompt_tokens", "timings"}


def test_streams_text_with_the_chat_template():
    done = run_cli("--model", str(FIXTURE_DIR), "--image", str(FIXTURE_DIR / "images/rgb_378x378.png"),
                   "--prompt", "Describe this.", "--max-new-tokens", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


@pytest.mark.parametrize("args, message", [
    (["--model", "no/such-model-here", "--prompt", "x"], "hf download no/such-model-here"),  # offline, or no hub
    (["--model", "/nonexistent/folder", "--prompt", "x"], "no such checkpoint folder"),
    (["--model", str(FIXTURE_DIR), "--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--model", str(FIXTURE_DIR), "--prompt", "x", "--temperature", "-1"], "temperature must be >= 0"),
    (["--model", str(FIXTURE_DIR), "--prompt", "x", "--image", "/nonexistent.png"], "no such image file"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    done = run_cli(*args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [done.stderr.splitlines()[-1]]


EXAMPLE = "minivlm/tiny/minivlm-tiny/example.png"


def run_demo(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    from minivlm.tiny import DEMO_DIR

    return subprocess.run([sys.executable, "-m", "minivlm.generate", "--image", str(DEMO_DIR / "example.png"), *args],
                          capture_output=True, text=True, timeout=300, input=stdin, cwd=cwd)


def test_prompt_from_a_file_and_from_standard_input(tmp_path):
    question = tmp_path / "question.txt"
    question.write_text("What color is the circle?\n", encoding="utf-8")
    from_file = run_demo("--prompt-file", str(question), cwd=tmp_path)  # the demo model, from another folder
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == "green\n"
    from_stdin = run_demo("--prompt", "-", stdin="What color is the circle?\n", cwd=tmp_path)
    assert from_stdin.returncode == 0 and from_stdin.stdout == "green\n"
    missing = run_demo("--prompt-file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "--prompt-file" in missing.stderr
    both = run_demo("--prompt", "x", "--prompt-file", str(question))
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_a_placeholder_written_in_the_prompt_places_the_image():
    """Issue #14: `<|image|>` in a chat prompt is that image's place, not one more placeholder."""
    done = run_demo("--prompt", "<|image|>What color is the circle?")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "green\n"


def test_compile_option_gives_the_same_answer():
    """--compile runs the ViT's blocks compiled (minivlm/accel/compiled_vit.py, tested there): same answer."""
    done = run_demo("--prompt", "What shape is red?", "--compile")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "triangle\n"


def test_verbose_dtype_threads_and_the_greedy_note():
    done = run_demo("--prompt", "What color is the circle?", "--verbose", "--top-k", "5", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "green\n"
    assert "dtype: float32 (auto: the checkpoint's stored float32" in done.stderr  # the demo is stored in float32
    assert "threads: 1" in done.stderr  # a small model: one thread (default_threads)
    assert "note: --top-k and --seed are ignored at temperature 0" in done.stderr
    done = run_demo("--prompt", "What color is the circle?", "--verbose", "--threads", "2", "--dtype", "float32")
    assert "threads: 2" in done.stderr and "dtype: float32 (asked for)" in done.stderr
    assert "note:" not in done.stderr
