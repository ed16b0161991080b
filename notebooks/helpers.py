"""Display helpers shared by the notebooks: paths, Markdown output, tables, un-patchifying crops for plots.

Nothing about the model lives here: every number the notebooks show is computed by `minivlm` in the
notebook itself. These few functions only keep plotting boilerplate out of the way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import display

NOTEBOOK_DIR = Path(__file__).resolve().parent
ROOT = NOTEBOOK_DIR.parent  # the repository
FIXTURE_DIR = ROOT / "tests" / "fixtures" / "jvlm-tiny"  # random weights + the official code's golden outputs
REAL_CONFIG_DIR = ROOT / "minivlm" / "configs" / "jina-vlm"  # the release's sizes, no weights
REAL_WEIGHTS_DIR = ROOT / "weights" / "jina-vlm"  # `make weights` puts the real model here

if str(ROOT) not in sys.path:  # import this checkout's minivlm, installed or not
    sys.path.insert(0, str(ROOT))


def setup() -> None:
    """Inline PNG figures, small, so the stored notebooks stay light on GitHub."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:  # in a notebook kernel, whatever MPLBACKEND says
        shell.run_line_magic("matplotlib", "inline")
    plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (7, 4), "font.size": 9,
                         "axes.titlesize": 9, "image.interpolation": "nearest"})
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=110)
    # One thread: the tensors here are small, and on a busy machine (CI, a shared laptop) a second OpenMP thread
    # mostly spin-waits against other processes; measured up to 50x slower training steps than one thread.
    torch.set_num_threads(1)


def md(text: str) -> None:
    """Show `text` as Markdown (and as itself where Markdown is not rendered)."""
    display({"text/markdown": text, "text/plain": text}, raw=True)


def table(header: list[str], rows: list[list], align: str | None = None) -> None:
    """A Markdown table; numbers get thousands separators."""
    def cell(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return str(v)
        return f"{v:,}" if isinstance(v, int) else f"{v:,.3g}"
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    md("\n".join(lines))


def crops_as_images(patches: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[crops, grid², patch²·3] in [-1, 1] -> [crops, S, S, 3] in [0, 1]: the tiler's patches as pictures to plot."""
    from minivlm.core.tiler import unpatchify

    return ((unpatchify(patches, patch_size).permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1)  # [crops, S, S, 3]


def grid_overlay(ax, size: int, step: int, **kwargs) -> None:
    """Thin lines every `step` px over an image of `size` px."""
    style = dict(color="white", lw=0.4, alpha=0.6) | kwargs
    for v in range(0, size + 1, step):
        ax.axhline(v - 0.5, **style)
        ax.axvline(v - 0.5, **style)
