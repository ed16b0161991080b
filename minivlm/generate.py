"""`python -m minivlm.generate`: image(s) + prompt -> a streamed answer, from an official-format checkpoint.

    python -m minivlm.generate --image shapes.png --prompt "What color is the circle?"   # the embedded demo model
    python -m minivlm.generate --model jinaai/jina-vlm --image cat.jpg --prompt "What is in this image?"
    python -m minivlm.generate --model jinaai/jina-vlm --image scan.png --prompt-file question.txt   # or --prompt -

The prompt goes through the checkpoint's chat template unless --raw is given, in which case it is used verbatim,
like the official processor; a <|image|> written in the prompt marks where an image goes (one per image),
otherwise the images go first. For a conversation with follow-up questions: python -m minivlm.chat.
--json prints one JSON object instead of streaming.
Bad input ends with a one-line message and exit code 2 (--debug shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from .formats.image_io import MAX_IMAGE_PIXELS
from .hub import DEMO_NAME, resolve_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SMALL_MODEL_PARAMETERS = 50_000_000  # below this, one thread decodes fastest (see default_threads)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors (an unknown option, a bad number, a missing --prompt) as one `error:` line and
    exit code 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see --help)\n")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options that choose and load the model, shared by `generate` and `chat`."""
    p.add_argument("--model", default=DEMO_NAME,
                   help="checkpoint folder, a Hugging Face id (e.g. jinaai/jina-vlm, downloaded into the Hugging Face "
                        f"cache) or {DEMO_NAME} (the embedded demo model, the default)")
    p.add_argument("--revision", default=None, help="with a Hugging Face id: branch, tag or commit (default: main)")
    p.add_argument("--dtype", choices=["auto", *sorted(DTYPES)], default="auto",
                   help="auto (default): the checkpoint's stored dtype where this device runs it natively (bfloat16 "
                        "on GPUs and on CPUs with AVX512-BF16 or AMX), else float32")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: 1 for models under 50 M parameters, where more threads only add "
                        "overhead; else PyTorch's default)")
    p.add_argument("--max-crops", type=int, default=None,
                   help="tiles per image at most (default: the checkpoint's, 12); fewer = fewer image tokens")
    p.add_argument("--allow-truncated", action="store_true",
                   help="accept image files that end early (the missing part is filled in)")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                   help=f"refuse larger images (default {MAX_IMAGE_PIXELS:,}; 0 = no limit)")
    p.add_argument("--check-weights", action="store_true", help="check every tensor for NaN/Inf while loading")
    p.add_argument("--compile", action="store_true",
                   help="run the ViT's blocks through torch.compile: the first image compiles (tens of seconds), "
                        "later ones run faster (chat, many questions)")
    p.add_argument("--verbose", action="store_true", help="say which folder, dtype and thread count are used")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m minivlm.generate", description=__doc__.split("\n\n")[0])
    add_model_options(p)
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several images)")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the question or instruction; - reads it from standard input")
    prompt.add_argument("--prompt-file", metavar="PATH", help="read the prompt from this file (UTF-8)")
    add_sampling_options(p)
    p.add_argument("--raw", action="store_true", help="use the prompt verbatim (no chat template)")
    p.add_argument("--json", action="store_true", help="print one JSON object: text, token_ids, prompt_tokens, timings")
    return p.parse_args(argv)


def read_prompt(args: argparse.Namespace) -> str:
    """--prompt TEXT, --prompt - (standard input) or --prompt-file PATH; a final newline is not part of it."""
    if args.prompt_file is not None:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--prompt-file {args.prompt_file}: cannot read it as UTF-8 text ({e})") from None
    elif args.prompt == "-":
        text = sys.stdin.read()
    else:
        return args.prompt
    return text.rstrip("\r\n")


def resolve_model(model: str, revision: str | None = None) -> Path:
    """A local folder as is, "minivlm-tiny" the demo model, else a Hugging Face id (into the Hugging Face cache)."""
    return resolve_checkpoint(model, revision)


def check_model_args(args: argparse.Namespace) -> None:
    """Every check of the shared options that needs no model, so that a typo fails in a second, not after
    loading 5 GB."""
    from .core.config import MAX_CROPS_LIMIT
    from .core.sampler import SamplingSettings
    from .devices import check_device
    from .vlm import SEED_RANGE

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.max_crops is not None and args.max_crops < 1:
        raise ValueError(f"--max-crops must be at least 1, got {args.max_crops}")
    if args.max_crops is not None and args.max_crops > MAX_CROPS_LIMIT:  # the tiler's bound (core/config.py)
        raise ValueError(f"--max-crops must be at most {MAX_CROPS_LIMIT}, got {args.max_crops}")
    if args.seed is not None and not 0 <= args.seed < SEED_RANGE:
        raise ValueError(f"--seed must be from 0 to 2**64 - 1, got {args.seed}")
    if args.max_image_pixels < 0:
        raise ValueError(f"--max-image-pixels must be >= 0 (0 = no limit), got {args.max_image_pixels}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    SamplingSettings(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    check_device(args.device)
    note = ignored_sampling_note(args)
    if note:
        print(note, file=sys.stderr)


def check_args(args: argparse.Namespace) -> None:
    from .formats.processor import check_prompt

    check_model_args(args)
    check_prompt(args.prompt, len(args.image))


def ignored_sampling_note(args: argparse.Namespace) -> str | None:
    """One line when sampling flags were given that greedy decoding (temperature 0) does not use."""
    if args.temperature != 0:
        return None
    given = [flag for flag, value, off in (("--top-k", args.top_k, 0), ("--top-p", args.top_p, 1.0),
                                            ("--seed", args.seed, None)) if value != off]
    if not given:
        return None
    names = given[0] if len(given) == 1 else ", ".join(given[:-1]) + " and " + given[-1]
    return (f"note: {names} {'is' if len(given) == 1 else 'are'} ignored at temperature 0 (greedy "
            "decoding); give --temperature > 0 to sample")


def default_threads(n_parameters: int) -> int | None:
    """The thread count for a model of this size: 1 below SMALL_MODEL_PARAMETERS, else None (PyTorch's default).

    A small model's matrices take microseconds; splitting them over threads costs more in hand-overs than it
    saves, and a thread that shares its core with anything else stalls every step: on a 2-core machine the demo
    model (1.3 M parameters) decoded at 689 tokens/s with 1 thread and 80 with 2 (290-390 against 16-23 while
    other work ran).
    """
    return 1 if n_parameters < SMALL_MODEL_PARAMETERS else None


def load_model(args: argparse.Namespace):
    """The model the shared options describe: resolved, loaded in the chosen dtype, threads set."""
    from .core.config import with_max_crops
    from .devices import choose_dtype
    from .vlm import load

    folder = resolve_model(args.model, args.revision)
    vlm = load(folder, dtype=args.dtype, device=args.device, check_weights=args.check_weights, compile=args.compile)
    if args.max_crops is not None:
        vlm.cfg = with_max_crops(vlm.cfg, args.max_crops)
    threads = args.threads or default_threads(sum(t.numel() for t in vlm.weights.values()))
    if threads is not None:
        torch.set_num_threads(threads)
    if args.verbose:
        dtype, why = choose_dtype(args.dtype, folder, vlm.device)
        print(f"model: {folder}\ndtype: {str(dtype).removeprefix('torch.')} ({why})\n"
              f"threads: {torch.get_num_threads()}", file=sys.stderr)
    return vlm


def sampling_kwargs(args: argparse.Namespace) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)


def open_images(paths: list[str], args: argparse.Namespace) -> list:
    from .formats.image_io import open_image

    return [open_image(p, allow_truncated=args.allow_truncated, max_image_pixels=args.max_image_pixels or None)
            for p in paths]


def run(args: argparse.Namespace) -> None:
    args.prompt = read_prompt(args)
    check_args(args)
    images = open_images(args.image, args)  # fail on a bad image before the (slow) model load
    vlm = load_model(args)
    prompt = args.prompt if args.raw else vlm.render_chat([{"role": "user", "content": args.prompt}], len(images))
    stream = None if args.json else (lambda piece: print(piece, end="", flush=True))
    result = vlm.generate(prompt, images, on_text=stream, **sampling_kwargs(args))
    if args.json:
        print(json.dumps({"text": result.text, "token_ids": result.token_ids, "prompt_tokens": result.prompt_tokens,
                          "timings": result.timings}, ensure_ascii=False))
    else:
        print()


def one_line_warning(message, *args, **kwargs) -> str:
    """Notes such as "animated image: using the first frame of 12" print as one line, like the errors."""
    return f"warning: {message}\n"


def print_error(error: Exception) -> None:
    """`error: ...` on one line of stderr."""
    print("error: " + "; ".join(line.strip() for line in str(error).splitlines() if line.strip()), file=sys.stderr)


def run_main(run_fn, args: argparse.Namespace) -> int:
    """Run a command: bad input ends with one line and exit code 2 (the traceback with --debug)."""
    warnings.formatwarning = one_line_warning
    try:
        run_fn(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        if args.debug:
            raise
        print_error(e)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
