"""The ViT's blocks on CPU with the bias, tanh-GELU and residual adds done inside oneDNN's matrix products.

Why: a ViT block over 13 crops is four matrix products with elementwise passes between them, and on a 2-core CPU
those passes are not free. PyTorch's profiler on one full-size block in bfloat16 (9,477 patches; 2 cores of an
Intel Xeon with AMX, 2026-12-02): matrix products 530 ms, attention 269 ms, GELU 118 ms, copying the biases into
the outputs 50 ms, LayerNorms 19 ms, residual adds 8 ms. oneDNN (the library behind PyTorch's CPU matrix
products) can apply a bias, an activation and a sum to each tile of the product while the tile is still in the
core's cache: its "post-ops". PyTorch exposes them as `torch.ops.mkldnn._linear_pointwise` (the op Inductor's
freezing pass emits for `nn.Linear` on CPU). Measured on that machine, medians of 9 interleaved runs of one block:
768 ms plain, 602 ms fused (0.78x).

The vision runs in groups of a few crops (`encode_in_groups`, installed as `hooks.encode_images`), each group
through every block and the connector before the next: each group's widest intermediate, the MLP's [patches,
4304], under `cpp_build.LARGEST_REUSED_BLOCK` (`crop_groups`; 13 crops in bfloat16 run as 7 + 6 in 64 MiB, as
5 + 4 + 4 in glibc's default 32 MiB). oneDNN's products into outputs above that size pay for fresh memory pages
every time (`cpp_build.row_passes`). Measured on 2 cores of an Intel Xeon with AMX (2026-12-04), medians of 7
interleaved runs: qkv 74 ms at 9,477 rows against 32 ms in passes of 2,916, up 103 against 43; the whole vision
of the bench's 1176x910 image, medians of 5 interleaved: 6.69 s in one pass, 5.49 s with each block split into
passes of crops, 5.34 s against 5.77 with the groups running every block in turn instead (no block's parts to
concatenate, and each block's intermediates reuse the memory the previous block freed: 14-89 thousand page
faults per vision instead of 244-363 thousand). Crops never meet in the vision, so the groups compute the same
thing (oneDNN may round a product differently at another number of rows: the tests hold float32 to 1e-5 and
bfloat16 to the same greedy tokens, in one group and in several).

The block is `core.vit.vit_block` with its four products swapped for fused ones (the qkv product with its bias
inside, which PyTorch's `F.linear` copies into the output first); the heads' attention is the same
`core.vit.attend_heads`. The arithmetic differs only in rounding: the fused ops apply the bias, GELU and sum
to the float32 accumulator and round to bfloat16 once, where the plain block rounds after the product and again
after each elementwise op (tests/accel/test_fused_vit.py: float32 equal to 1e-5, bfloat16 the same greedy tokens).

Installed by `minivlm.load` for bfloat16 on CPUs where oneDNN computes bfloat16 natively (AVX512-BF16 or AMX);
`MINIVLM_CPU_KERNELS=0` switches it off with the decoding kernels; `load(..., compile=True)` runs the compiled
blocks instead. Autograd (training) always runs the plain block.
"""

from __future__ import annotations


import torch
from torch import Tensor

from ..core import layers
from ..core.config import ModelConfig, VisionConfig
from ..core.generation import encode_images
from ..core.layers import layer_norm
from ..core.vit import PREFIX, attend_heads, qkv_bias
from . import cpp_build
from .cpp_build import onednn_computes_bfloat16, runs_here

onednn = torch.ops.mkldnn


def fused_vit_block(x: Tensor, w: dict[str, Tensor], i: int, cfg: VisionConfig) -> Tensor:
    """`vit_block(x, w, i, cfg)` with fused products. x: [crops, 729, width] on CPU, float32 or bfloat16."""
    p = f"{PREFIX}layers.{i}."
    h = layer_norm(x, w[p + "attn_lnorm.weight"], w[p + "attn_lnorm.bias"], cfg.norm_eps)
    qkv = onednn._linear_pointwise(h, w[p + "attn.qkv_w.weight"], qkv_bias(w, i), "none", [], "")  # [.., 3·width]
    h = attend_heads(qkv, cfg)  # [crops, 729, width]
    x = onednn._linear_pointwise.binary(h, x, w[p + "attn.out.weight"], w[p + "attn.out.bias"], "add")  # x + out(h)

    h = layer_norm(x, w[p + "ffn_lnorm.weight"], w[p + "ffn_lnorm.bias"], cfg.norm_eps)
    h = onednn._linear_pointwise(h, w[p + "ffn.up.weight"], w[p + "ffn.up.bias"], "gelu", [], "tanh")  # [.., 4304]
    return onednn._linear_pointwise.binary(h, x, w[p + "ffn.down.weight"], w[p + "ffn.down.bias"], "add")


def crop_groups(crops: int, cfg: VisionConfig, dtype: torch.dtype) -> int:
    """In how many groups of whole crops the vision runs: each group's widest intermediate, the ViT's qkv or MLP
    rows ([patches, 4304] in the release), at most cpp_build.LARGEST_REUSED_BLOCK (a crop alone may exceed it)."""
    crop_bytes = cfg.grid**2 * max(3 * cfg.hidden_size, cfg.mlp_size) * dtype.itemsize
    fit = max(1, cpp_build.LARGEST_REUSED_BLOCK // crop_bytes)  # crops per group
    return -(-crops // fit)  # ceil: tensor_split then gives each group at most `fit` crops


def encode_in_groups(w: dict[str, Tensor], cfg: ModelConfig, images: Tensor, image_masks: Tensor) -> Tensor | None:
    """`generation.encode_images` over a few crops at a time (`crop_groups`), or None where one group holds them
    all. Each group is itself an `encode_images` call: its hook finds one group enough and lets the plain vision
    run, with the fused blocks inside."""
    weight = w[f"{PREFIX}layers.0.ffn.up.weight"]
    groups = crop_groups(len(images), cfg.vision, weight.dtype) if runs_here(weight) else 1
    if groups <= 1:
        return None
    return torch.cat([encode_images(w, cfg, crops, masks)  # [crops in the group, 196, text width]
                      for crops, masks in zip(images.tensor_split(groups), image_masks.tensor_split(groups))])


def applies(x: Tensor, w: dict[str, Tensor], i: int) -> bool:
    """Whether block i runs fused: bfloat16 on a CPU that computes it natively, nothing to differentiate."""
    weight = w[f"{PREFIX}layers.{i}.ffn.up.weight"]
    return runs_here(x, weight) and onednn_computes_bfloat16()


def _vit_block_hook(x: Tensor, w: dict[str, Tensor], i: int, cfg: VisionConfig) -> Tensor | None:
    return fused_vit_block(x, w, i, cfg) if applies(x, w, i) else None


def install() -> bool:
    """Run the ViT's blocks fused wherever `applies`; returns whether installed (not with MINIVLM_CPU_KERNELS=0)."""
    if not cpp_build.ENABLED or not torch.backends.mkldnn.is_available():
        return False
    layers.hooks.vit_block = _vit_block_hook
    layers.hooks.encode_images = encode_in_groups
    return True


def uninstall() -> None:
    """Back to the plain `vit_block` and `encode_images`."""
    if layers.hooks.vit_block is _vit_block_hook:
        layers.hooks.vit_block = None
    if layers.hooks.encode_images is encode_in_groups:
        layers.hooks.encode_images = None
