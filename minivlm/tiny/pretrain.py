"""The demo model's starting checkpoint: `python -m minivlm.tiny.pretrain --out DIR [--steps N]`.

Jina-VLM starts from a pretrained SigLIP2 and a pretrained Qwen3; the demo model has neither. This writes the
tiny checkpoint's files and initial weights, then (N > 0) runs `minivlm.tiny.train`'s stage 0, which stands in
for SigLIP2's pretraining: ViT + connector alone on images, a throw-away probe naming the shape under every
pooled cell of each image's thumbnail (its first crop, whatever the number of tiles). The checkpoint's geometry
is `Sizes()`'s: issue #17's 168 px crops, 2-patch margins, max_crops 4. It is outside the paper's recipe; `python -m minivlm.train --recipe minivlm/train/recipes/tiny.json` then trains
the result through the paper's two stages (`make train-tiny` runs both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..formats.config_json import load_config
from ..formats.weights import save_weights
from . import train as train_tiny
from .checkpoint import Sizes, init_weights, write_checkpoint_files


def pretrain(out: str | Path, steps: int = 1500, seed: int = 0, progress: bool = True, sizes: Sizes = Sizes(),
             batch_size: int = 16) -> list[float]:
    """Write the checkpoint folder `out` and run `steps` stage-0 steps; returns each step's probe loss."""
    out = Path(out)
    if steps == 0:  # the random start, e.g. for tests
        write_checkpoint_files(out, sizes)
        save_weights(init_weights(load_config(out), seed), out)
        return []
    recipe = train_tiny.Recipe(vision_steps=steps, align_steps=0, instruct_steps=0, batch_size=batch_size)
    return train_tiny.train(out, recipe, sizes, seed=seed, progress=progress)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m minivlm.tiny.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500, help="stage-0 steps (0: random weights only)")
    p.add_argument("--seed", type=int, default=0)
    d = Sizes()
    p.add_argument("--crop", type=int, default=d.crop, help=f"crop side in pixels (default {d.crop})")
    p.add_argument("--margin", type=int, default=d.margin, help=f"overlap margin in patches (default {d.margin})")
    p.add_argument("--max-crops", type=int, default=d.max_crops, help=f"tiles at most (default {d.max_crops})")
    args = p.parse_args(argv)
    pretrain(args.out, args.steps, args.seed, sizes=Sizes(crop=args.crop, margin=args.margin, max_crops=args.max_crops))


if __name__ == "__main__":
    main()
