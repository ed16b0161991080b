"""`python -m minivlm.train`: train or fine-tune any official-format Jina-VLM checkpoint from a recipe.

    python -m minivlm.train --model weights/jina-vlm --data mine.jsonl --out runs/mine --lora-rank 16
    torchrun --nproc_per_node 8 -m minivlm.train --recipe minivlm/train/recipes/jina-vlm-finetune.json ...
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

from .recipe import DEFAULTS, RecipeError, apply_overrides, read_recipe


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m minivlm.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint folder to start from (official format)")
    p.add_argument("--data", action="append", help="JSONL file (repeatable); replaces the recipe's sources")
    p.add_argument("--out", required=True, help="folder for the checkpoint, losses.csv and loss_curve.png")
    p.add_argument("--steps", type=int, help="optimizer steps in all (spread over the stages)")
    p.add_argument("--batch-size", type=int, help="GLOBAL batch: samples per optimizer step over all processes")
    p.add_argument("--lr", type=float, help="base learning rate (each group: lr x its lr_scale)")
    p.add_argument("--seed", type=int)
    p.add_argument("--recipe", help="recipe file (.json, or .toml)")
    p.add_argument("--lora-rank", type=int, help="LoRA rank on the recipe's target matrices (0: full fine-tuning)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: the recipe's")
    p.add_argument("--parallel", choices=["ddp", "fsdp"], help="engine under torchrun (default: the recipe's)")
    p.add_argument("--on-bad", choices=["skip", "error"], help="bad records: report and skip, or stop")
    p.add_argument("--resume", help="a checkpoint folder written by this trainer: continue exactly where it stopped")
    p.add_argument("--set", action="append", metavar="FIELD=JSON", help="any recipe field, e.g. stages.0.steps=50")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        recipe = read_recipe(args.recipe) if args.recipe else copy.deepcopy(DEFAULTS)
        recipe = apply_overrides(recipe, args)
    except RecipeError as e:
        sys.exit(f"error: {e}")
    from .loop import train  # torch and the model code load only once the command line is valid

    rows = train(recipe, args.out, args.resume)
    if rows and os.environ.get("RANK", "0") == "0":
        print(f"final loss {rows[-1]['loss']:.4f}; saved to {args.out}")


if __name__ == "__main__":
    main()
