"""Stage 0 of the demo model, vision pretraining: `python -m minivlm.tiny.pretrain --out DIR [--steps N]`.

Where it sits. Jina-VLM's recipe (the paper) trains a pretrained SigLIP2 encoder and a pretrained Qwen3 decoder
in two stages, alignment then instruction tuning; for the demo model those two stages are
`python -m minivlm.train --recipe minivlm/train/recipes/tiny.json`. The demo model starts from random numbers, so
this stage, OUTSIDE the paper's recipe, stands in for SigLIP2's own pretraining. It writes the tiny checkpoint's
files (`checkpoint.write_checkpoint_files`; `Sizes()`'s geometry: issue #17's 168 px crops, 2-patch margins,
max_crops 4) and initial weights, then trains the ViT and connector alone, on images only; the decoder keeps
its initial weights. `make train-tiny` runs this, then the trainer on the same folder.

The objective: a throw-away linear probe reads every pooled cell of each image's thumbnail (its first crop,
whatever the number of tiles; 6 x 6 cells at 168 px) and must name the shape that covers it (colour and kind, or
background) and say whether the shape's centre falls in it. Naming the kind of a cell inside a shape needs its
edges, so the ViT learns to look around. Measured with the earlier tiny-only recipe: trained through the answers
alone, shape questions were still at chance (36%, chance 33%) after 1,200 steps of 16 images; after this stage,
they were at 86% after 1,000 steps of the later stages.

The forward pass is minivlm's inference code (`core.generation.encode_images`) with autograd on the checkpoint's
own tensors. Step k's images come from `random.Random(f"{seed}/{k}")`, so the run depends on the seed alone.
AdamW, warm-up then cosine decay, bfloat16 autocast (about 2x faster than float32 on CPUs with AVX512-BF16 or
AMX); the weights and AdamW state stay float32 and are saved as float32, with `pretrain_losses.csv` (step,
stage 0, the probe's loss) and `pretrain_loss_curve.png` next to them (the trainer, run on the same folder next,
writes its own `losses.csv` and `loss_curve.png` beside them).
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.generation import encode_images
from ..formats.config_json import load_config
from ..formats.processor import preprocess
from ..formats.tokenizer import Tokenizer
from ..formats.weights import save_weights
from ..train import log
from . import task as tiny_task
from .checkpoint import Sizes, init_weights, write_checkpoint_files
from .data import training_scene

N_CLASSES = 1 + len(tiny_task.COLORS) * len(tiny_task.SHAPES)  # background + (colour, kind)
LR = 1e-3  # ViT, connector and probe (3e-3 made the connector's output blow up)
WEIGHT_DECAY = 0.01  # on matrices; none on 1-D norms and biases
BETAS = (0.9, 0.98)
CLIP = 1.0  # max gradient norm
LOSSES_CSV, LOSS_CURVE = "pretrain_losses.csv", "pretrain_loss_curve.png"  # not the trainer's names: both stay


def cell_targets(scene: tiny_task.Scene, cells: int, samples: int = 4,
                 grid: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe's labels on the thumbnail's cells x cells pooled grid (it shows the whole image, stretched):
    kind [cells²], the `shape_class` covering most of the samples x samples points of each cell that any shape
    covers (0: none), and centre [cells²], 1 where a shape's box centre lies.

    `grid` is the crop's patches per side (default 2 · cells). Cell i pools patches 2i and 2i + 1; with an odd
    grid (27 patches -> 14 cells) the last cell holds one real patch and padding, so it covers only the image's
    last 1/grid, and its sample points are taken there."""
    grid = 2 * cells if grid is None else grid
    if not 2 * cells - 1 <= grid <= 2 * cells:
        raise ValueError(f"{cells} pooled cells of 2 patches cannot cover a {grid}-patch grid")
    labels = torch.from_numpy(np.array(tiny_task.label_map(scene))).long()  # [H, W]
    start = torch.arange(cells) * 2 / grid  # [cells]: where each cell starts, as a fraction of the side
    span = (torch.clamp(torch.arange(cells) * 2 + 2, max=grid) - torch.arange(cells) * 2) / grid  # [cells]
    frac = (start[:, None] + (torch.arange(samples) + 0.5) / samples * span[:, None]).flatten()  # [cells · samples]
    ys, xs = (frac * scene.height).long(), (frac * scene.width).long()
    seen = labels[ys][:, xs].reshape(cells, samples, cells, samples).transpose(1, 2)  # [cells, cells, s, s]
    votes = F.one_hot(seen.flatten(2), N_CLASSES).sum(2)  # [cells, cells, classes]
    votes[..., 0] = 0
    kind = torch.where(votes.sum(-1) > 0, votes.argmax(-1), 0).flatten()  # [cells²]
    centre = torch.zeros(cells * cells, dtype=torch.long)
    for s in scene.shapes:
        x0, y0, x1, y1 = s.bbox
        row = min(int((y0 + y1) / 2 / scene.height * grid) // 2, cells - 1)  # the patch, then its cell
        col = min(int((x0 + x1) / 2 / scene.width * grid) // 2, cells - 1)
        centre[row * cells + col] = 1
    return kind, centre


def thumbnails(scenes: list[tiny_task.Scene], tokenizer: Tokenizer, cfg) -> dict[str, torch.Tensor]:
    """Each scene's thumbnail alone (its first crop as `preprocess` makes it, whatever its number of tiles; no
    text), with the probe's labels."""
    samples = [preprocess("<|image|>", [tiny_task.render(s)], tokenizer, cfg) for s in scenes]
    kind, centre = zip(*(cell_targets(s, cfg.vision.pooled_grid[0], grid=cfg.vision.grid) for s in scenes))
    return {"images": torch.cat([s["images"][:1] for s in samples]),  # [B, 144, 588] at 168 px
            "image_masks": torch.cat([s["image_masks"][:1] for s in samples]),  # [B, 144]
            "cell_kind": torch.stack(kind), "cell_centre": torch.stack(centre)}  # [B, cells²] each


def step_batch(step: int, seed: int, batch_size: int, tokenizer: Tokenizer, cfg) -> dict[str, torch.Tensor]:
    """Step `step`'s batch: the `thumbnails` of `training_scene`s drawn from `random.Random(f"{seed}/{step}")`."""
    rng = random.Random(f"{seed}/{step}")
    return thumbnails([training_scene(rng) for _ in range(batch_size)], tokenizer, cfg)


def probe_loss(features: torch.Tensor, probe: dict, batch: dict) -> torch.Tensor:
    """Per cell of each thumbnail's features [B, cells², width], which shape covers it and whether a shape's centre
    lies in it. The probe reads RMS-normalised features, so it cannot win by scale."""
    x = F.rms_norm(features.float(), (features.shape[-1],))
    kind = F.cross_entropy((x @ probe["kind"].T).flatten(0, 1), batch["cell_kind"].flatten())
    centre = F.cross_entropy((x @ probe["centre"].T).flatten(0, 1), batch["cell_centre"].flatten())
    return kind + centre


def lr_scale(step: int, steps: int) -> float:
    """Warm-up over the first 5% of the steps, then cosine decay to 5% of the peak."""
    return min(1.0, (step + 1) / max(1, steps // 20)) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))


def pretrain(out: str | Path, steps: int = 1500, seed: int = 0, progress: bool = True, sizes: Sizes = Sizes(),
             batch_size: int = 16) -> list[float]:
    """Write the checkpoint folder `out` and run `steps` stage-0 steps; returns each step's probe loss.
    With 0 steps, the folder holds the random start (e.g. for tests)."""
    out = Path(out)
    write_checkpoint_files(out, sizes)
    cfg, tokenizer = load_config(out), Tokenizer(out)
    weights = init_weights(cfg, seed)
    if steps == 0:
        save_weights(weights, out)
        return []
    if cfg.vision.pooled_grid[0] != cfg.vision.pooled_grid[1] or cfg.vision.pool_h != 2:
        raise ValueError("the probe's labels assume square crops pooled in 2 x 2 windows")
    gen = torch.Generator().manual_seed(seed)
    probe = {name: (torch.randn(n, cfg.text.hidden_size, generator=gen) * 0.02).requires_grad_()
             for name, n in (("kind", N_CLASSES), ("centre", 2))}
    trained = [w.requires_grad_() for k, w in weights.items() if k.startswith("model.vision_model.")]
    trained += probe.values()
    optimizer = torch.optim.AdamW([{"params": [w for w in trained if w.ndim == 2], "weight_decay": WEIGHT_DECAY},
                                   {"params": [w for w in trained if w.ndim != 2], "weight_decay": 0.0}], betas=BETAS)
    losses, started = [], time.perf_counter()
    for step in range(steps):
        batch = step_batch(step, seed, batch_size, tokenizer, cfg)
        for group in optimizer.param_groups:
            group["lr"] = LR * lr_scale(step, steps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = encode_images(weights, cfg, batch["images"], batch["image_masks"])  # [B, cells², width]
            loss = probe_loss(features, probe, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, CLIP)
        optimizer.step()
        losses.append(loss.item())
        if progress:
            recent = losses[-20:]
            elapsed = time.perf_counter() - started
            log.progress({"step": step + 1, "stage": "stage 0", "loss": sum(recent) / len(recent),
                          "samples_per_s": batch_size * (step + 1) / elapsed, "lr_vision": optimizer.param_groups[0]["lr"]},
                         steps, elapsed)
    if progress:
        print(file=sys.stderr)
    save_weights(weights, out)
    with open(out / LOSSES_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "stage", "loss"])
        writer.writerows([i + 1, 0, f"{v:.5f}"] for i, v in enumerate(losses))
    log.write_curve(out / LOSS_CURVE, [{"loss": v, "stage": "0"} for v in losses])
    return losses


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
