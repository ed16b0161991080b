"""Draws docs/architecture.png: Jina-VLM's data flow through minivlm's files, pixels to answer.

    .venv/bin/python docs/architecture.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# (file, what it does, the tensor that leaves it, for the release's 1176x910 example)
STEPS = [
    ("formats/\nimage_io.py", "open the file:\nEXIF, size limits", "uint8\n[910, 1176, 3]"),
    ("core/\ntiler.py", "12 overlapping\n378 px tiles\n+ a thumbnail", "patches\n[13, 729, 588]"),
    ("core/\npatch_embed.py", "Linear 588→1152\n+ positions", "[13, 729, 1152]"),
    ("core/\nvit.py", "SigLIP2 blocks\n0..24; outputs\nof 24 and 18", "[13, 729, 2304]"),
    ("core/\npooler.py", "2x2 attention\npooling + SwiGLU\nprojector", "[13, 196, 2048]"),
    ("core/\ndecoder.py", "Qwen3; vectors\nadded at their\n<im_patch> tokens", "[1, 1774, 2048]"),
    ("core/\nsampler.py", "logits →\nnext token", "token id"),
]
SIDE = [("formats/tokenizer.py + processor.py", "text + <|image|> → token ids, layout"),
        ("core/generation.py", "prefill once, then one token at a time"),
        ("accel/: decoder_kernels, fused_vit, cpu_attention,\ncompiled_vit", "optional fast paths via core.layers.hooks")]


def main(out: Path = Path(__file__).with_name("architecture.png")) -> None:
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=100)
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    width, gap = 1.38, 0.17
    for i, (name, what, shape) in enumerate(STEPS):
        x = 0.15 + i * (width + gap)
        colour = "#e8eefc" if name.startswith("core") else "#f2f2f2"
        ax.add_patch(FancyBboxPatch((x, 1.7), width, 1.75, boxstyle="round,pad=0.03", fc=colour, ec="#445"))
        ax.text(x + width / 2, 3.2, name, ha="center", va="center", fontsize=7, weight="bold")
        ax.text(x + width / 2, 2.58, what, ha="center", va="center", fontsize=6.5)
        ax.text(x + width / 2, 1.98, shape, ha="center", va="center", fontsize=6.2, family="monospace", color="#225")
        if i:
            ax.add_patch(FancyArrowPatch((x - gap, 2.62), (x, 2.62), arrowstyle="-|>", mutation_scale=9, color="#445"))
    ax.text(0.15, 3.8, "Jina-VLM in minivlm: pixels → tiler → patch embed → ViT → pooler → decoder → sampler",
            fontsize=10, weight="bold")
    for k, (name, what) in enumerate(SIDE):
        x = 0.15 + k * 3.6
        ax.add_patch(FancyBboxPatch((x, 0.45), 3.4, 0.9, boxstyle="round,pad=0.03", fc="#fbf6e6", ec="#886"))
        ax.text(x + 1.7, 1.07, name, ha="center", va="center", fontsize=7.2, weight="bold")
        ax.text(x + 1.7, 0.72, what, ha="center", va="center", fontsize=6.8)
    ax.text(0.15, 0.1, "blue: minivlm/core (the model, plain torch)   grey: minivlm/formats (official files)   "
            "yellow: around the chain", fontsize=6.8, color="#444")
    fig.savefig(out, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
