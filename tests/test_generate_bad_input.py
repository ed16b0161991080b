"""The command line: bad input ends with exit code 2 and one `error:` line, no traceback (generate.py).

Most cases call `main()` in-process (fast); a few run the real command in a subprocess."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from bad_input import (
    RGB_378,
    checkpoint,
    encoded,
    missing_shard,
    noise,
    pickle_only,
    png_header_only,
    truncated,
    with_nan,
    without_image_tokens,
    write,
)
from conftest import FIXTURE_DIR
from safetensors.torch import load_file, save_file

from minivlm.formats.image_io import ImageError
from minivlm.generate import main

PROMPT = ["--prompt", "What is this?"]


def fifo(tmp_path):
    os.mkfifo(tmp_path / "a.png")
    return tmp_path / "a.png"


def with_text(root, name, text):
    (root / name).write_text(text)
    return root


def with_int8(root):
    tensors = load_file(root / "model.safetensors")
    tensors["model.language_model.ln_f.weight"] = tensors["model.language_model.ln_f.weight"].to(torch.int8)
    save_file(tensors, root / "model.safetensors")
    return root


def cli_case(name, message, *, image=None, model=None, args=(), skip=False):
    """argv factory (tmp_path -> argv) for one bad input; `image`/`model` build a file or checkpoint."""
    def argv(tmp_path):
        root = model(tmp_path) if model else FIXTURE_DIR
        images = ["--image", str(image(tmp_path))] if image else []
        return ["--model", str(root), *images, *(args or PROMPT)]
    marks = [pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")] if skip else []
    return pytest.param(argv, message, id=name, marks=marks)


CLI_CASES = [
    cli_case("not-an-image", "not an image file", image=lambda t: write(t / "a.png", b"hello")),
    cli_case("empty-image", "the file is empty (0 bytes)", image=lambda t: write(t / "a.png", b"")),
    cli_case("truncated", "--allow-truncated", image=lambda t: truncated(t / "a.png")),
    cli_case("bomb", "--max-image-pixels", image=lambda t: png_header_only(t / "a.png", 30000, 30000)),
    cli_case("aspect-ratio", "aspect ratio 250.0", image=lambda t: write(t / "a.png", encoded(noise(2, 500), "PNG"))),
    cli_case("too-many-placeholders", "2 <|image|> placeholder(s) but 0 image(s)",
             args=["--prompt", "<|image|><|image|> compare", "--raw"]),
    cli_case("too-few-placeholders", "1 <|image|> placeholder(s) but 2 image(s)",
             args=["--prompt", "<|image|> compare", "--raw", "--image", str(RGB_378), "--image", str(RGB_378)]),
    cli_case("empty-prompt", "the prompt is empty and there is no image", args=["--prompt", ""]),
    cli_case("layout-token", "image layout token(s) <im_col>", args=["--prompt", "a <im_col> b"]),
    cli_case("too-long", "over the model's maximum of 600",
             model=lambda t: checkpoint(t, {"config.json": lambda c: c["text_config"].update(max_sequence_length=600)}),
             args=["--prompt", "Describe.", "--image", str(FIXTURE_DIR / "images/rgb_1176x910.png")]),
    cli_case("max-new-tokens-negative", "--max-new-tokens must be at least 1",
             args=[*PROMPT, "--max-new-tokens", "-3"]),
    cli_case("top-p", "top_p must be in (0, 1]", args=[*PROMPT, "--top-p", "1.5"]),
    cli_case("top-p-zero", "top_p must be in (0, 1]", args=[*PROMPT, "--top-p", "0"]),
    cli_case("max-crops", "--max-crops must be at least 1", args=[*PROMPT, "--max-crops", "0"]),
    cli_case("cuda", "no CUDA GPU is available", args=[*PROMPT, "--device", "cuda"], skip=True),
    cli_case("not-a-checkpoint", "is not a checkpoint folder", model=lambda t: t),
    cli_case("unknown-config-value", "activation_type = 'relu' is not supported", model=lambda t: checkpoint(
        t, {"config.json": lambda c: c["text_config"]["block_config"]["ffn_config"].update(activation_type="relu")})),
    cli_case("unsupported-preprocessing", "cropping_method = 'resize' is not supported",
             model=lambda t: checkpoint(t, {"preprocessor_config.json": lambda c: c.update(cropping_method="resize")})),
    cli_case("tokenizer-without-image-tokens", "has no single token '<im_start>'",
             model=lambda t: checkpoint(t, {"tokenizer.json": without_image_tokens})),
    cli_case("missing-shard", "names shard files that are not there", model=missing_shard),
    cli_case("nan-weights", "contains NaN or Inf", model=lambda t: with_nan(checkpoint(t)),
             args=[*PROMPT, "--check-weights"]),
    cli_case("pickle-only", "pickle checkpoints are never loaded", model=pickle_only),
    # the second round (#13): one case per class
    cli_case("fifo-image", "a FIFO (named pipe), not a regular file", image=fifo),
    cli_case("device-image", "/dev/zero: a device file, not a regular file", image=lambda t: Path("/dev/zero")),
    cli_case("nan-in-config", "not valid JSON: NaN is not a number JSON allows", model=lambda t: with_text(
        checkpoint(t), "preprocessor_config.json", '{"max_crops": NaN}')),
    cli_case("billion-layers", "text_config.n_layers = 1000000000 is beyond any real model",
             model=lambda t: checkpoint(t, {"config.json": lambda c: c["text_config"].update(n_layers=10**9)})),
    cli_case("int8-weights", "tensors stored as a type that is not a float", model=lambda t: with_int8(checkpoint(t))),
    cli_case("index-as-list", "weight_map should be an object", model=lambda t: with_text(
        missing_shard(t), "model.safetensors.index.json", '{"weight_map": ["model-00001-of-00002.safetensors"]}')),
    cli_case("tokenizer-config-list", "tokenizer_config.json should hold a JSON object, found list",
             model=lambda t: with_text(checkpoint(t), "tokenizer_config.json", "[]")),
    cli_case("space-flag-string", "always_start_with_space should be true or false, found 'false'",
             model=lambda t: checkpoint(t, {"processor_config.json":
                                            lambda c: c.update(always_start_with_space="false")})),
    cli_case("template-error", "chat_template.jinja: the chat template failed to render (ZeroDivisionError",
             model=lambda t: with_text(checkpoint(t), "chat_template.jinja", "{{ 1 / 0 }}")),
    cli_case("ten-million-spaces", "characters long: more than the model's maximum of 40,960 tokens could hold",
             args=["--prompt", "x" + " " * 9_999_999]),
]


@pytest.mark.parametrize("argv, message", CLI_CASES)
def test_cli_bad_input_in_process(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets it: restore it after
    assert main(argv(tmp_path)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


SUBPROCESS_CASES = ["truncated", "empty-prompt", "cuda", "nan-weights"]  # one per kind; main() in-process covers all


@pytest.mark.parametrize("argv, message", [c for c in CLI_CASES if c.id in SUBPROCESS_CASES])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, argv, message):
    done = subprocess.run([sys.executable, "-m", "minivlm.generate", *argv(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_cli_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ImageError):
        main(["--model", str(FIXTURE_DIR), "--image", str(truncated(tmp_path / "a.png")), *PROMPT, "--debug"])


def test_cli_notes_print_as_one_line(tmp_path):
    path = truncated(tmp_path / "a.png")
    done = subprocess.run([sys.executable, "-m", "minivlm.generate", "--model", str(FIXTURE_DIR), "--image", str(path),
                           *PROMPT, "--allow-truncated", "--max-new-tokens", "2", "--max-crops", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert done.stderr == f"warning: {path}: the file is truncated; the missing part is filled in\n"


# -- argument errors, argv, devices, limits: one line each ------------------------------------------------------

ARG_CASES = [
    (["--prompt", "hi", "--max-new-tokens", "many"], "argument --max-new-tokens: invalid int value: 'many'"),
    (["--prompt", "hi", "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    (["--max-new-tokens", "3"], "one of the arguments --prompt --prompt-file is required"),
    (["--prompt", "hi", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["--prompt", "hi", "--device", "gpu"], "device 'gpu' is not a PyTorch device"),
    (["--prompt", "hi", "--device", "meta"], "device 'meta': minivlm runs on cpu, cuda, mps"),
    (["--prompt", "hi", "--max-crops", "100000000"], "--max-crops must be at most 1024, got 100000000"),
    (["--prompt", "hi", "--seed", "-1"], "--seed must be from 0 to 2**64 - 1, got -1"),
    (["--prompt", "hi", "--temperature", "nan"], "temperature must be a finite number"),
    (["--prompt", "a\udcff b"], "the prompt is not valid Unicode text: character 1 is a lone surrogate"),
]


def exit_code(argv: list[str]) -> int:
    """main()'s exit code, whether it returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("args, message", ARG_CASES, ids=[a[-1][:20] for a, _ in ARG_CASES])
def test_cli_argument_errors_are_one_line(capsys, monkeypatch, args, message):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    assert exit_code(["--model", str(FIXTURE_DIR), *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_invalid_utf8_on_the_real_command_line():
    """Python turns the bytes into lone surrogates (surrogateescape); the message says what they are."""
    done = subprocess.run([sys.executable.encode(), b"-m", b"minivlm.generate", b"--model", bytes(FIXTURE_DIR),
                           b"--prompt", b"caf\xe9 ?"], capture_output=True, timeout=300)
    err = done.stderr.decode("utf-8", "backslashreplace")
    assert done.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "the prompt is not valid Unicode text: character 3 is a lone surrogate" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_with_an_index_is_a_device(capsys):
    """cuda:N passes argument parsing: without a GPU the message is about the GPU, not the spelling."""
    assert exit_code(["--model", str(FIXTURE_DIR), "--prompt", "hi", "--device", "cuda:1"]) == 2
    assert "'cuda:1': no CUDA GPU is available" in capsys.readouterr().err


def test_repetition_penalty_on_an_image_prompt(capsys):
    """A user's first --repetition-penalty on an image prompt: the image tokens have no logit row."""
    assert main(["--model", str(FIXTURE_DIR), "--image", str(RGB_378), *PROMPT, "--repetition-penalty", "1.1",
                 "--max-new-tokens", "3", "--json"]) == 0
    assert '"token_ids"' in capsys.readouterr().out
