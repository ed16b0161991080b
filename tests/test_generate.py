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
