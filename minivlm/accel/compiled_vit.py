"""The ViT's blocks through torch.compile (TorchInductor): the same `core.vit.vit_block`, compiled.

Why: a ViT block is four large matrix products with elementwise work around them (two LayerNorms, the bias and
tanh-GELU of the MLP, the q/k/v bias, two residual adds, the permutes into and out of attention). Eager PyTorch
runs each of those as its own pass over a [crops, 729, 1152] (MLP: 4304) tensor; Inductor fuses them into a few
generated loops. Measured on 2 cores of an AMD EPYC (AVX512-BF16, no AMX), one full-size block over 13 crops in
bfloat16: 1.29 s eager, 1.14 s compiled (0.88x), after a first call that compiles for about 25 s.

One graph serves every block: the compiled function takes the block's weights under short keys
("attn.qkv_w.weight", ...), so what it traces does not depend on which block runs (27 blocks, one compile; a new
number of crops compiles once more, with that dimension dynamic).

Opt-in, because the compile costs more than it saves on one image: `minivlm.load(..., compile=True)`, `--compile`
on `python -m minivlm.generate` / `chat` / `bench`. `install()` plugs `_vit_block_hook` into
`core.layers.hooks.vit_block`; it leaves autograd (training) to the plain block. Same arithmetic as the plain
block up to the order of float rounding (tests/accel/test_compiled_vit.py: float32 to 1e-5, bfloat16 the same
greedy tokens).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..core import layers
from ..core.config import VisionConfig
from ..core.vit import PREFIX, vit_block

BLOCK = PREFIX + "layers.0."  # the key prefix the compiled function reads its short keys under


def _block_with_short_keys(x: Tensor, block_weights: dict[str, Tensor], cfg: VisionConfig) -> Tensor:
    """`vit_block` on one block's weights given under short keys, as block 0 (its index only names keys)."""
    return vit_block(x, {BLOCK + key: tensor for key, tensor in block_weights.items()}, 0, cfg)


@functools.cache
def _compiled():
    return torch.compile(_block_with_short_keys)


def _vit_block_hook(x: Tensor, w: dict[str, Tensor], i: int, cfg: VisionConfig) -> Tensor | None:
    prefix = f"{PREFIX}layers.{i}."
    block_weights = {key[len(prefix):]: tensor for key, tensor in w.items() if key.startswith(prefix)}
    if torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in block_weights.values())):
        return None  # training: autograd through the plain block
    return _compiled()(x, block_weights, cfg)


def install() -> None:
    """Run the ViT's blocks compiled (the first call of each new shape compiles)."""
    layers.hooks.vit_block = _vit_block_hook


def uninstall() -> None:
    """Back to the plain `vit_block`."""
    if layers.hooks.vit_block is _vit_block_hook:
        layers.hooks.vit_block = None
