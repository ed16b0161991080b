"""Train the embedded demo model from scratch: `python -m minivlm.tiny.train` (or `make train-tiny`).

The model is `minivlm.tiny.checkpoint`'s Jina-VLM in miniature. Its forward pass is minivlm's own inference
code (`core.generation.encode_images` and `prefill`, `core.decoder.lm_head`) with autograd on: the weights
are a dict of leaf tensors, exactly what `minivlm.load` returns, so there is no second model to keep in sync.
The data is the synthetic shapes task of `minivlm.tiny.task` (4 languages; colour, count, count-by-colour, shape
and which-is-left questions), drawn as `minivlm.tiny.data` does for any trainer.

The paper trains a pretrained SigLIP2 encoder and a pretrained Qwen3 in two stages. Ours start random, so a
stage 0 stands in for the encoder's pretraining:

  stage 0, vision pretraining: ViT + connector alone, on images only. A throw-away linear probe reads every
      pooled cell of the thumbnail (each image's first crop, whatever its number of tiles; 6 x 6 cells at
      168 px) and must name the shape that covers it (colour and kind, or background) and say whether the
      shape's centre falls in it. Naming the kind of a cell inside a shape
      needs its edges, so the ViT learns to look around. Measured on this task: trained through the answers
      alone, shape questions were still at chance (36%, chance 33%) after 1,200 steps of 16 images; after
      stage 0, they were at 86% after 1,000 steps of stages 1 and 2.
  stage 1, alignment: the user turn is only the image and the target a plain description, e.g.
      "red circle, blue square" (left to right): the decoder learns to read the image tokens.
  stage 2, instruction tuning: multi-turn chats, several questions about one image in mixed languages,
      "<|im_start|>user\\n<|image|>Q1<|im_end|>\\n<|im_start|>assistant\\nA1<|im_end|>\\n<|im_start|>user\\nQ2..."
      Only the answer tokens and their <|im_end|> are in the loss. The first turn is exactly the prompt that
      `generate` builds; later turns reuse the image for more answers per step.

In stages 1 and 2 the probe's loss is kept at a small weight, so the encoder keeps what it learnt. Everything
follows one seed. Steps run under bfloat16 autocast (about 2x faster than float32 on CPUs with AVX512-BF16 or
AMX); the weights and AdamW state stay float32 and are saved as float32.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.batch import collate
from ..core.decoder import KVCache, lm_head
from ..core.generation import encode_images, prefill
from ..core.pooler import connector
from ..core.vit import vit_features
from ..formats.chat import CHATML_FALLBACK, render_chat
from ..formats.config_json import load_config
from ..formats.processor import preprocess
from ..formats.tokenizer import Tokenizer
from ..formats.weights import save_weights
from . import DEMO_DIR
from . import task as tiny_task
from .checkpoint import Sizes, init_weights, write_checkpoint_files
from .data import caption, question_turns, training_scene

N_CLASSES = 1 + len(tiny_task.COLORS) * len(tiny_task.SHAPES)  # background + (colour, kind)


@dataclass(frozen=True)
class Recipe:
    """Steps per stage, batch, learning rates. `make train-tiny` uses these defaults."""

    vision_steps: int = 1500  # stage 0
    align_steps: int = 300  # stage 1
    instruct_steps: int = 3700  # stage 2
    batch_size: int = 16
    vision_lr: float = 1e-3  # ViT, connector, probe (3e-3 made the connector's output blow up)
    text_lr: float = 2e-3  # decoder
    probe_weight: float = 0.3  # of the probe's loss in stages 1 and 2
    turns: int = 8  # questions per stage-2 chat, at most (one per fact of the image)
    weight_decay: float = 0.01

    @property
    def steps(self) -> int:
        return self.vision_steps + self.align_steps + self.instruct_steps

    def stage(self, step: int) -> int:
        return 0 if step < self.vision_steps else 1 if step < self.vision_steps + self.align_steps else 2


# ------------------------------------------------------------------------------------------------ data

def conversation(scene: tiny_task.Scene, stage: int, turns: int, rng: random.Random) -> list[dict]:
    """Stage 1: the image alone, then its caption. Stage 2: up to `turns` questions about different facts of
    the image, each in a random language (`data.question_turns`)."""
    if stage == 1:
        return [{"role": "user", "content": ""}, {"role": "assistant", "content": caption(scene)}]
    messages = []
    for qa in question_turns(scene, turns, rng):
        messages += [{"role": "user", "content": qa.question}, {"role": "assistant", "content": qa.answer}]
    return messages


def make_example(scene: tiny_task.Scene, messages: list[dict], tokenizer: Tokenizer, cfg) -> dict[str, torch.Tensor]:
    """preprocess() of the rendered chat plus `targets`: at each position, the id of the NEXT token when that
    token belongs to an assistant answer (its <|im_end|> included), else -100 (ignored by the loss)."""
    text = render_chat(CHATML_FALLBACK, messages, n_images=1, add_generation_prompt=False)
    sample = preprocess(text, [tiny_task.render(scene)], tokenizer, cfg)
    ids = sample["input_ids"].tolist()
    header, im_end = tokenizer.encode("<|im_start|>assistant\n"), tokenizer.token_id("<|im_end|>")
    in_answer, i = [False] * len(ids), 0
    while i < len(ids):
        if ids[i:i + len(header)] != header:
            i += 1
            continue
        i += len(header)
        while i < len(ids):  # the answer, up to and including its <|im_end|>
            in_answer[i] = True
            i += 1
            if ids[i - 1] == im_end:
                break
    targets = [ids[i + 1] if i + 1 < len(ids) and in_answer[i + 1] else -100 for i in range(len(ids))]
    return dict(sample, targets=torch.tensor(targets))


def cell_targets(scene: tiny_task.Scene, cells: int, samples: int = 4,
                 grid: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 0 labels of the thumbnail's cells x cells pooled grid (it shows the whole image, stretched):
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


def thumbnail_rows(crop_batch_index: torch.Tensor) -> torch.Tensor:
    """Indices of each sample's thumbnail among a collated batch's crops [crops]: its first crop. `collate`
    keeps each sample's crops contiguous and in order, and `preprocess` puts an image's thumbnail first,
    whatever its number of tiles (with max_crops 4: 3, 4 or 5 crops per image). The probe is for one image per
    sample, which is what every stage-0..2 batch here holds. [B]"""
    first = torch.ones_like(crop_batch_index, dtype=torch.bool)
    first[1:] = crop_batch_index[1:] != crop_batch_index[:-1]
    rows = first.nonzero().flatten()
    if not torch.equal(crop_batch_index[rows], torch.arange(len(rows))):
        raise ValueError("crops are not grouped by sample in order 0, 1, ...: not a collated batch")
    return rows


class StepBatches(torch.utils.data.Dataset):
    """Item `step` is that step's batch, drawn from its own `random.Random(f"{seed}/{step}")`: the data depend
    only on the seed and the step. Stage 0 batches hold images only (no text)."""

    def __init__(self, out: Path, seed: int, recipe: Recipe):
        self.cfg, self.tokenizer, self.seed, self.recipe = load_config(out), Tokenizer(out), seed, recipe
        # Pooled cells per side of a crop: 16 patches / 2 = 8 (224 px), 12 / 2 = 6 (168 px), 27 -> 14 (378 px)
        self.cells = self.cfg.vision.pooled_grid[0]
        if self.cfg.vision.pooled_grid[0] != self.cfg.vision.pooled_grid[1] or self.cfg.vision.pool_h != 2:
            raise ValueError("the probe's labels assume square crops pooled in 2 x 2 windows")

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = random.Random(f"{self.seed}/{step}")
        stage = self.recipe.stage(step)
        scenes = [training_scene(rng) for _ in range(self.recipe.batch_size)]
        if stage == 0:  # the thumbnails alone: the first crop of each image, whatever its number of tiles
            samples = [preprocess("<|image|>", [tiny_task.render(s)], self.tokenizer, self.cfg) for s in scenes]
            batch = {"images": torch.cat([s["images"][:1] for s in samples]),  # [B, 144, 588] at 168 px
                     "image_masks": torch.cat([s["image_masks"][:1] for s in samples])}  # [B, 144]
        else:
            examples = [make_example(s, conversation(s, stage, self.recipe.turns, rng), self.tokenizer, self.cfg)
                        for s in scenes]
            batch = collate(examples)  # pads on the left
            longest = batch["input_ids"].shape[1]
            batch["targets"] = torch.stack([F.pad(e["targets"], (longest - len(e["targets"]), 0), value=-100)
                                            for e in examples])  # [B, L]
        kind, centre = zip(*(cell_targets(s, self.cells, grid=self.cfg.vision.grid) for s in scenes))
        return dict(batch, stage=torch.tensor(stage), cell_kind=torch.stack(kind), cell_centre=torch.stack(centre))


# ------------------------------------------------------------------------------------------------ losses

def image_features(weights: dict, cfg, images: torch.Tensor, image_masks: torch.Tensor) -> torch.Tensor:
    """`generation.encode_images` with one saving: with max_crops 1 an image's two crops (thumbnail, single tile)
    are the same pixels, so the ViT runs on every other crop. [crops, cells², text width]"""
    if cfg.preprocessor.max_crops != 1:
        return encode_images(weights, cfg, images, image_masks)
    features = vit_features(images[0::2], weights, cfg.vision).repeat_interleave(2, dim=0)  # [crops, 256, 2·w]
    return connector(features, image_masks, weights, cfg.vision)


def forward(weights: dict, cfg, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """`generation.prefill` on `image_features`: (hidden [B, L, width], image features [crops, cells², width])."""
    features = image_features(weights, cfg, batch["images"], batch["image_masks"])
    cache = KVCache.empty(cfg.text, *batch["input_ids"].shape, torch.float32, features.device)  # float32 weights
    hidden, _ = prefill(weights, cfg, batch, cache, features=features)
    return hidden, features


def answer_loss(hidden: torch.Tensor, weights: dict, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer positions only."""
    keep = targets >= 0  # [B, L]
    return F.cross_entropy(lm_head(hidden[keep], weights).float(), targets[keep])


def probe_loss(thumbnails: torch.Tensor, probe: dict, batch: dict) -> torch.Tensor:
    """Stage 0's objective: per cell of each thumbnail [B, cells², width], which shape covers it and whether
    a shape's centre lies in it. The probe reads RMS-normalised features, so it cannot win by scale."""
    x = F.rms_norm(thumbnails.float(), (thumbnails.shape[-1],))
    kind = F.cross_entropy((x @ probe["kind"].T).flatten(0, 1), batch["cell_kind"].flatten())
    centre = F.cross_entropy((x @ probe["centre"].T).flatten(0, 1), batch["cell_centre"].flatten())
    return kind + centre


def step_loss(weights: dict, probe: dict, cfg, batch: dict, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to minimise, the stage's own loss for the curve: the probe's in stage 0, the answers' after)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if batch["stage"] == 0:
            features = encode_images(weights, cfg, batch["images"], batch["image_masks"])  # thumbnails only
            loss = probe_loss(features, probe, batch)
            return loss, loss
        hidden, features = forward(weights, cfg, batch)
        answers = answer_loss(hidden, weights, batch["targets"])
        thumbnails = features[thumbnail_rows(batch["crop_batch_index"])]  # [B, cells², width]
        return answers + recipe.probe_weight * probe_loss(thumbnails, probe, batch), answers


# ------------------------------------------------------------------------------------------------ training

def train(out: str | Path = DEMO_DIR, recipe: Recipe = Recipe(), sizes: Sizes = Sizes(), seed: int = 0,
          progress: bool = True, save: bool = True, callback=None) -> list[float]:
    """Build the checkpoint folder `out`, train, save; returns each step's loss (the probe's in stage 0).

    `callback(step, weights)`, if given, runs after every optimizer step (e.g. to evaluate now and then)."""
    out = Path(out)
    torch.manual_seed(seed)
    write_checkpoint_files(out, sizes)
    data = StepBatches(out, seed, recipe)
    cfg = data.cfg
    weights = {k: w.requires_grad_() for k, w in init_weights(cfg, seed).items()}
    gen = torch.Generator().manual_seed(seed)
    probe = {name: (torch.randn(n, cfg.text.hidden_size, generator=gen) * 0.02).requires_grad_()
             for name, n in (("kind", N_CLASSES), ("centre", 2))}
    vision = [w for k, w in weights.items() if k.startswith("model.vision_model.")] + list(probe.values())
    text = [w for k, w in weights.items() if not k.startswith("model.vision_model.")]
    groups = [{"params": [w for w in params if (w.ndim == 2) == matrix], "base_lr": lr,
               "weight_decay": recipe.weight_decay if matrix else 0.0}  # no decay on 1-D norms and biases
              for params, lr in ((vision, recipe.vision_lr), (text, recipe.text_lr)) for matrix in (True, False)]
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98))
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(recipe.steps))
    losses, started = [], time.perf_counter()
    for step, batch in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_scale(step, recipe)
        loss, shown = step_loss(weights, probe, cfg, batch, recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(weights.values()) + list(probe.values()), 1.0)
        optimizer.step()
        losses.append(shown.item())
        if callback is not None:
            callback(step + 1, weights)
        if progress:
            progress_bar(step + 1, recipe, losses, time.perf_counter() - started)
    if progress:
        print(file=sys.stderr)
    if save:
        save_weights(weights, out)
        write_loss_curve(out, losses, recipe, time.perf_counter() - started)
    return losses


def lr_scale(step: int, recipe: Recipe) -> float:
    """Warm-up then cosine decay, within stage 0 and again over stages 1 + 2 (the decoder starts there)."""
    start, length = (0, recipe.vision_steps) if step < recipe.vision_steps else \
        (recipe.vision_steps, recipe.align_steps + recipe.instruct_steps)
    t = step - start
    return min(1.0, (t + 1) / max(1, length // 20)) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / length)))


def progress_bar(done: int, recipe: Recipe, losses: list[float], elapsed: float) -> None:
    recent = losses[-20:]
    bar = "#" * (30 * done // recipe.steps)
    eta = elapsed / done * (recipe.steps - done)
    print(f"\r[{bar:<30}] {done}/{recipe.steps} stage {recipe.stage(done - 1)} loss {sum(recent) / len(recent):.4f} "
          f"{elapsed / 60:.1f} min, eta {eta / 60:.1f} min ", end="", file=sys.stderr, flush=True)


def write_loss_curve(out: Path, losses: list[float], recipe: Recipe, seconds: float) -> None:
    """losses.csv and loss_curve.png (drawn with PIL, log scale), next to the weights."""
    from PIL import Image, ImageDraw

    with open(out / "losses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "stage", "loss"])
        writer.writerows([i + 1, recipe.stage(i), f"{v:.5f}"] for i, v in enumerate(losses))
    w, h, pad = 640, 360, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = math.log10(max(min(losses), 1e-4)), math.log10(max(losses))

    def xy(i: int, v: float) -> tuple[float, float]:
        return (pad + (w - 2 * pad) * i / max(1, len(losses) - 1),
                h - pad - (h - 2 * pad) * (math.log10(max(v, 1e-4)) - lo) / max(hi - lo, 1e-6))

    draw.rectangle((pad, pad, w - pad, h - pad), outline="black")
    draw.line([xy(i, v) for i, v in enumerate(losses)], fill=(190, 190, 230))
    avg, smooth = losses[0], []
    for i, v in enumerate(losses):
        avg = v if i in (recipe.vision_steps, recipe.vision_steps + recipe.align_steps) else 0.95 * avg + 0.05 * v
        smooth.append(avg)
    draw.line([xy(i, v) for i, v in enumerate(smooth)], fill=(20, 40, 200), width=2)
    for boundary in (recipe.vision_steps, recipe.vision_steps + recipe.align_steps):
        x = xy(boundary, losses[0])[0]
        draw.line((x, pad, x, h - pad), fill=(200, 60, 60))
    draw.text((pad, 10), f"training loss (log scale, {10 ** hi:.3g} .. {10 ** lo:.3g}), stages 0 | 1 | 2: "
                         f"probe | caption | answers; {len(losses)} steps, {seconds / 60:.1f} min", fill="black")
    img.save(out / "loss_curve.png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m minivlm.tiny.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEMO_DIR), help="checkpoint folder to write (default: the shipped demo model)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    losses = train(args.out, seed=args.seed)
    print(f"final loss {sum(losses[-50:]) / len(losses[-50:]):.4f}; saved to {args.out}")


if __name__ == "__main__":
    main()
