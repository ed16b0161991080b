"""The demo model's starting checkpoint: `python -m minivlm.tiny.pretrain --out DIR [--steps N]`.

Jina-VLM starts from a pretrained SigLIP2 and a pretrained Qwen3; the demo model has neither. This writes the
tiny checkpoint's files and initial weights, then (N > 0) runs `minivlm.tiny.train`'s stage 0, which stands in
for SigLIP2's pretraining: ViT + connector alone on images, a throw-away probe naming the shape under every
pooled cell. It is outside the paper's recipe; `python -m minivlm.train --recipe minivlm/train/recipes/tiny.json` then trains
the result through the paper's two stages (`make train-tiny` runs both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..formats.config_json import load_config
from . import train as train_tiny
from .checkpoint import Sizes, init_weights, save_weights, write_checkpoint_files


def pretrain(out: str | Path, steps: int = 1500, seed: int = 0, progress: bool = True) -> list[float]:
    out = Path(out)
    if steps == 0:  # the random start, e.g. for tests
        write_checkpoint_files(out, Sizes())
        save_weights(init_weights(load_config(out), seed), out)
        return []
    return train_tiny.train(out, train_tiny.Recipe(vision_steps=steps, align_steps=0, instruct_steps=0), seed=seed,
                            progress=progress)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m minivlm.tiny.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500, help="stage-0 steps (0: random weights only)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    pretrain(args.out, args.steps, args.seed)


if __name__ == "__main__":
    main()
