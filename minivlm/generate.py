"""`python -m minivlm.generate`: image(s) + prompt -> a streamed answer, from an official-format checkpoint.

    python -m minivlm.generate --image shapes.png --prompt "What color is the circle?"   # the embedded demo model
    python -m minivlm.generate --model weights/jina-vlm --image cat.jpg --prompt "What is in this image?"

The prompt goes through the checkpoint's chat template (one <|image|> per image) unless --raw is given, in which
case it is used verbatim, like the official processor. --json prints one JSON object instead of streaming.
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
from .tiny import DEMO_DIR

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors (an unknown option, a bad number, a missing --prompt) as one `error:` line and
    exit code 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m minivlm.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEMO_DIR),
                   help="checkpoint folder, or a Hugging Face id (e.g. jinaai/jina-vlm); default: the embedded tiny model")
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several images)")
    p.add_argument("--prompt", required=True, help="the question or instruction")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--raw", action="store_true", help="use the prompt verbatim (no chat template)")
    p.add_argument("--json", action="store_true", help="print one JSON object: text, token_ids, prompt_tokens, timings")
    p.add_argument("--max-crops", type=int, default=None,
                   help="tiles per image at most (default: the checkpoint's, 12); fewer = fewer image tokens")
    p.add_argument("--allow-truncated", action="store_true",
                   help="accept image files that end early (the missing part is filled in)")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                   help=f"refuse larger images (default {MAX_IMAGE_PIXELS:,}; 0 = no limit)")
    p.add_argument("--check-weights", action="store_true", help="check every tensor for NaN/Inf while loading")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return p.parse_args(argv)


def resolve_model(model: str) -> Path:
    """A local folder as is; otherwise a Hugging Face id, downloaded once into weights/<name>."""
    path = Path(model)
    if path.is_dir():
        return path
    if model.count("/") != 1 or path.exists():
        raise FileNotFoundError(f"{model}: no such checkpoint folder (nor a Hugging Face id like jinaai/jina-vlm)")
    target = WEIGHTS_DIR / model.split("/")[1]
    if (target / "config.json").is_file():
        return target
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{model} is not downloaded yet and huggingface_hub is not installed: run "
                                f"`pip install huggingface_hub` then `make weights`, or download {model} into {target}"
                                ) from None
    print(f"downloading {model} into {target} ...", file=sys.stderr)
    try:
        snapshot_download(model, local_dir=target, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"])
    except Exception as e:  # offline, unknown repo, no access: all end the same way for the user
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise FileNotFoundError(f"could not download {model} ({type(e).__name__}: {e}); on a machine with internet "
                                f"run `make weights`, or copy the files into {target}") from None
    return target


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no model, so that a typo fails in a second, not after loading 5 GB."""
    from .core.config import MAX_CROPS_LIMIT
    from .core.sampler import SamplingSettings
    from .formats.processor import check_prompt
    from .vlm import SEED_RANGE, check_device

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
    SamplingSettings(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    check_device(args.device)
    check_prompt(args.prompt, len(args.image))


def run(args: argparse.Namespace) -> None:
    from .core.config import with_max_crops
    from .formats.image_io import open_image
    from .vlm import load

    check_args(args)
    images = [open_image(p, allow_truncated=args.allow_truncated, max_image_pixels=args.max_image_pixels or None)
              for p in args.image]  # fail on a bad image before the (slow) model load
    vlm = load(resolve_model(args.model), dtype=DTYPES[args.dtype], device=args.device,
               check_weights=args.check_weights)
    if args.max_crops is not None:
        vlm.cfg = with_max_crops(vlm.cfg, args.max_crops)
    prompt = args.prompt if args.raw else vlm.render_chat([{"role": "user", "content": args.prompt}], len(images))
    stream = None if args.json else (lambda piece: print(piece, end="", flush=True))
    result = vlm.generate(prompt, images, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed, on_text=stream)
    if args.json:
        print(json.dumps({"text": result.text, "token_ids": result.token_ids, "prompt_tokens": result.prompt_tokens,
                          "timings": result.timings}, ensure_ascii=False))
    else:
        print()


def one_line_warning(message, *args, **kwargs) -> str:
    """Notes such as "animated image: using the first frame of 12" print as one line, like the errors."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.formatwarning = one_line_warning
    try:
        run(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        if args.debug:
            raise
        print("error: " + "; ".join(line.strip() for line in str(e).splitlines() if line.strip()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
