"""What a training run shows and leaves behind: a progress line, losses.csv and loss_curve.png (rank 0 only)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

COLUMNS = ["step", "stage", "loss", "val_loss", "tokens", "samples_per_s", "lr_vision", "lr_connector",
           "lr_decoder", "lr_embeddings"]


def progress(row: dict, total: int, elapsed: float) -> None:
    done = row["step"]
    bar = "#" * (24 * done // total)
    lrs = " ".join(f"{k[3]}={row[k]:.1e}" for k in COLUMNS[6:] if row.get(k) is not None)
    val = f" val {row['val_loss']:.4f}" if row.get("val_loss") is not None else ""
    eta = elapsed / max(1, done) * (total - done)
    print(f"\r[{bar:<24}] {done}/{total} {row['stage']} loss {row['loss']:.4f}{val} lr {lrs} "
          f"{row['samples_per_s']:.1f} samples/s eta {eta / 60:.1f} min ", end="", file=sys.stderr, flush=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})


def write_curve(path: Path, rows: list[dict]) -> None:
    """Training loss (light: per step; dark: smoothed) and validation loss (red dots), log scale, drawn with PIL."""
    from PIL import Image, ImageDraw

    losses = [r["loss"] for r in rows]
    vals = [(i, r["val_loss"]) for i, r in enumerate(rows) if r.get("val_loss") is not None]
    if not losses:
        return
    w, h, pad = 640, 360, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    every = losses + [v for _, v in vals]
    lo, hi = math.log10(max(min(every), 1e-4)), math.log10(max(max(every), 1e-4))

    def xy(i: int, v: float) -> tuple[float, float]:
        return (pad + (w - 2 * pad) * i / max(1, len(losses) - 1),
                h - pad - (h - 2 * pad) * (math.log10(max(v, 1e-4)) - lo) / max(hi - lo, 1e-6))

    draw.rectangle((pad, pad, w - pad, h - pad), outline="black")
    if len(losses) > 1:
        draw.line([xy(i, v) for i, v in enumerate(losses)], fill=(190, 190, 230))
        avg, smooth = losses[0], []
        for v in losses:
            avg = 0.9 * avg + 0.1 * v
            smooth.append(avg)
        draw.line([xy(i, v) for i, v in enumerate(smooth)], fill=(20, 40, 200), width=2)
    for i, v in vals:
        x, y = xy(i, v)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(200, 40, 40))
    for i in range(1, len(rows)):  # stage boundaries
        if rows[i]["stage"] != rows[i - 1]["stage"]:
            x = xy(i, losses[0])[0]
            draw.line((x, pad, x, h - pad), fill=(200, 160, 60))
    draw.text((pad, 10), f"loss (log scale {10 ** hi:.3g} .. {10 ** lo:.3g}) over {len(losses)} steps; "
                         "red: validation", fill="black")
    img.save(path)
