"""Stage 0 of the demo model, vision pretraining: `python -m minivlm.tiny.pretrain --out DIR [--steps N]`.

Where it sits. Jina-VLM's recipe (the paper) trains a pretrained SigLIP2 encoder and a pretrained Qwen3 decoder
in two stages, alignment then instruction tuning; for the demo model those two stages are
`python -m minivlm.train --recipe minivlm/train/recipes/tiny.json` (then `tiny-counting.json` goes on from its
output). The demo model starts from random numbers, so this stage, OUTSIDE the paper's recipe, stands in for
SigLIP2's own pretraining. It writes the tiny checkpoint's files (`checkpoint.write_checkpoint_files`; `Sizes()`'s
geometry: issue #17's 168 px crops, 2-patch margins, max_crops 4) and initial weights, then trains the ViT and
connector alone, on images only; the decoder keeps its initial weights. `make train-tiny` runs this, then the
trainer on the same folder.

The objective: a throw-away linear probe reads every pooled cell of every crop (the thumbnail and each tile, as
`preprocess` cuts them; 6 x 6 cells at 168 px) and must name the shape that covers it (colour and kind, or
background), say whether the shape's centre falls in it and, where the crop shows the whole image, in which
twelfth of the width that centre lies. Naming the kind of a cell inside a shape needs its edges, so the ViT learns
to look around; the tiles teach it the larger, sharper views the decoder counts on, and the centre's place is
what "which is further left?" compares. Measured with the earlier tiny-only recipe (thumbnails, kind and centre
only): trained through the answers alone, shape questions were still at chance (36%, chance 33%) after 1,200
steps of 16 images; after this stage, they were at 86% after 1,000 steps of the later stages.

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
from ..core.tiler import crop_boxes
from ..formats.config_json import load_config
from ..formats.processor import preprocess
from ..formats.tokenizer import Tokenizer
from ..formats.weights import save_weights
from ..train import log
from ..train.loop import attention_backend
from ..train.recipe import ATTENTION_BACKENDS
from . import task as tiny_task
from .checkpoint import Sizes, init_weights, write_checkpoint_files
from .data import training_scene

N_CLASSES = 1 + len(tiny_task.COLORS) * len(tiny_task.SHAPES)  # background + (colour, kind)
X_BINS = 12  # centre_x: twelfths of the width, so "left" questions (centres >= 15 % apart) never share a bin
PROBES = {"kind": N_CLASSES, "centre": 2, "centre_x": X_BINS}  # the probe's heads: classes each
LR = 1e-3  # ViT, connector and probe (3e-3 made the connector's output blow up)
WEIGHT_DECAY = 0.01  # on matrices; none on 1-D norms and biases
BETAS = (0.9, 0.98)
CLIP = 1.0  # max gradient norm
LOSSES_CSV, LOSS_CURVE = "pretrain_losses.csv", "pretrain_loss_curve.png"  # not the trainer's names: both stay


def cell_targets(scene: tiny_task.Scene, cells: int, samples: int = 4, grid: int | None = None,
                 box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The probe's labels on the cells x cells pooled grid of the crop that shows `box` (top, left, bottom, right,
    as fractions of the image; `tiler.crop_boxes`; default: the thumbnail, the whole image stretched):
    kind [cells²], the `shape_class` of the shape covering most of the samples x samples points of each cell
    (0: none); centre [cells²], 1 where a shape's box centre lies; and centre_x [cells²], which twelfth of the
    image's width holds the covering shape's centre (X_BINS; -100, no target, on background cells and on crops
    that show part of the image, which cannot know where they sit in it; a single tile shows all of it).

    `grid` is the crop's patches per side (default 2 · cells). Cell i pools patches 2i and 2i + 1; with an odd
    grid (27 patches -> 14 cells) the last cell holds one real patch and padding, so it covers only the crop's
    last 1/grid, and its sample points are taken there."""
    grid = 2 * cells if grid is None else grid
    if not 2 * cells - 1 <= grid <= 2 * cells:
        raise ValueError(f"{cells} pooled cells of 2 patches cannot cover a {grid}-patch grid")
    top, left, bottom, right = box
    labels = torch.from_numpy(np.array(tiny_task.label_map(scene))).long()  # [H, W]
    start = torch.arange(cells) * 2 / grid  # [cells]: where each cell starts, as a fraction of the crop's side
    span = (torch.clamp(torch.arange(cells) * 2 + 2, max=grid) - torch.arange(cells) * 2) / grid  # [cells]
    frac = (start[:, None] + (torch.arange(samples) + 0.5) / samples * span[:, None]).flatten()  # [cells · samples]
    ys = ((top + frac * (bottom - top)) * scene.height).long().clamp(max=scene.height - 1)
    xs = ((left + frac * (right - left)) * scene.width).long().clamp(max=scene.width - 1)
    seen = labels[ys][:, xs]  # [cells · samples, cells · samples]: the class under each sample point
    owner = torch.zeros_like(seen)  # 1 + the index of the shape under each sample point, 0: background
    for i, s in enumerate(scene.shapes):  # boxes never overlap, so a point lies in one box at most
        x0, y0, x1, y1 = s.bbox
        inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
        owner[inside & (seen > 0)] = i + 1
    votes = F.one_hot(owner.reshape(cells, samples, cells, samples).transpose(1, 2).flatten(2),
                      len(scene.shapes) + 1).sum(2)  # [cells, cells, 1 + shapes]
    votes[..., 0] = 0
    cell_owner = torch.where(votes.sum(-1) > 0, votes.argmax(-1), 0).flatten()  # [cells²]
    classes = torch.tensor([0] + [tiny_task.shape_class(s) for s in scene.shapes])
    whole_image = box == (0.0, 0.0, 1.0, 1.0)  # the thumbnail, or the one tile of a 1 x 1 tiling
    bins = torch.tensor([-100] + [min(int((s.bbox[0] + s.bbox[2]) / 2 / scene.width * X_BINS), X_BINS - 1)
                                  for s in scene.shapes])
    centre_x = torch.where((cell_owner > 0) & whole_image, bins[cell_owner], -100)
    centre = torch.zeros(cells * cells, dtype=torch.long)
    for s in scene.shapes:
        cy = ((s.bbox[1] + s.bbox[3]) / 2 / scene.height - top) / (bottom - top)  # in the crop, 0..1 if inside
        cx = ((s.bbox[0] + s.bbox[2]) / 2 / scene.width - left) / (right - left)
        if 0 <= cy < 1 and 0 <= cx < 1:
            row, col = min(int(cy * grid) // 2, cells - 1), min(int(cx * grid) // 2, cells - 1)  # the patch's cell
            centre[row * cells + col] = 1
    return classes[cell_owner], centre, centre_x


def all_crops(scenes: list[tiny_task.Scene], tokenizer: Tokenizer, cfg) -> dict[str, torch.Tensor]:
    """Every crop of each scene as `preprocess` makes it (thumbnail, then its tiles; no text), with the probe's
    labels for each crop's cells."""
    images, masks, labels = [], [], []
    for scene in scenes:
        sample = preprocess("<|image|>", [tiny_task.render(scene)], tokenizer, cfg)
        boxes = crop_boxes(scene.width, scene.height, cfg)
        assert len(boxes) == len(sample["images"]), (len(boxes), sample["images"].shape)
        images.append(sample["images"])  # [crops, 144, 588] at 168 px
        masks.append(sample["image_masks"])  # [crops, 144]: the last crop's row is -1, as at inference
        labels += [cell_targets(scene, cfg.vision.pooled_grid[0], grid=cfg.vision.grid, box=b) for b in boxes]
    kind, centre, centre_x = (torch.stack(t) for t in zip(*labels))  # [all crops, cells²] each
    return {"images": torch.cat(images), "image_masks": torch.cat(masks),
            "cell_kind": kind, "cell_centre": centre, "cell_centre_x": centre_x}


def step_batch(step: int, seed: int, batch_size: int, tokenizer: Tokenizer, cfg) -> dict[str, torch.Tensor]:
    """Step `step`'s batch: `all_crops` of `training_scene`s drawn from `random.Random(f"{seed}/{step}")`."""
    rng = random.Random(f"{seed}/{step}")
    return all_crops([training_scene(rng) for _ in range(batch_size)], tokenizer, cfg)


def probe_loss(features: torch.Tensor, probe: dict, batch: dict) -> torch.Tensor:
    """Per cell of each crop's features [crops, cells², width]: which shape covers it, whether a shape's centre
    lies in it and, on thumbnails, where that shape's centre lies across the image. The probe reads
    RMS-normalised features, so it cannot win by scale."""
    x = F.rms_norm(features.float(), (features.shape[-1],)).flatten(0, 1)  # [crops · cells², width]
    loss = torch.zeros(())
    for name in PROBES:
        target = batch[f"cell_{name}"].flatten()
        if (target >= 0).any():
            loss = loss + F.cross_entropy(x @ probe[name].T, target, ignore_index=-100)
    return loss


def lr_scale(step: int, steps: int) -> float:
    """Warm-up over the first 5% of the steps, then cosine decay to 5% of the peak."""
    return min(1.0, (step + 1) / max(1, steps // 20)) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))


def pretrain(out: str | Path, steps: int = 3000, seed: int = 0, progress: bool = True, sizes: Sizes = Sizes(),
             batch_size: int = 16, attention: str | None = None) -> list[float]:
    """Write the checkpoint folder `out` and run `steps` stage-0 steps; returns each step's probe loss.
    With 0 steps, the folder holds the random start (e.g. for tests). `attention`: the SDPA backend, as the
    trainer's recipe field (`minivlm.train.loop.attention_backend`; "math": 40 steps in 17 s instead of 22-25 s on
    the 2-core AMD EPYC); None lets PyTorch pick."""
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
             for name, n in PROBES.items()}
    trained = [w.requires_grad_() for k, w in weights.items() if k.startswith("model.vision_model.")]
    trained += probe.values()
    optimizer = torch.optim.AdamW([{"params": [w for w in trained if w.ndim == 2], "weight_decay": WEIGHT_DECAY},
                                   {"params": [w for w in trained if w.ndim != 2], "weight_decay": 0.0}], betas=BETAS)
    losses, started = [], time.perf_counter()
    for step in range(steps):
        batch = step_batch(step, seed, batch_size, tokenizer, cfg)
        for group in optimizer.param_groups:
            group["lr"] = LR * lr_scale(step, steps)
        with attention_backend(attention):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                features = encode_images(weights, cfg, batch["images"], batch["image_masks"])  # [crops, cells², width]
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
    p.add_argument("--steps", type=int, default=3000, help="stage-0 steps (0: random weights only)")
    p.add_argument("--seed", type=int, default=0)
    d = Sizes()
    p.add_argument("--crop", type=int, default=d.crop, help=f"crop side in pixels (default {d.crop})")
    p.add_argument("--margin", type=int, default=d.margin, help=f"overlap margin in patches (default {d.margin})")
    p.add_argument("--max-crops", type=int, default=d.max_crops, help=f"tiles at most (default {d.max_crops})")
    p.add_argument("--attention", choices=ATTENTION_BACKENDS, help="SDPA backend (default: PyTorch picks)")
    args = p.parse_args(argv)
    pretrain(args.out, args.steps, args.seed, sizes=Sizes(crop=args.crop, margin=args.margin, max_crops=args.max_crops),
             attention=args.attention)


if __name__ == "__main__":
    main()
