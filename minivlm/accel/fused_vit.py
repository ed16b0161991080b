"""The ViT's blocks on CPU with the bias, tanh-GELU and residual adds done inside oneDNN's matrix products.

Why: a ViT block over 13 crops is four matrix products with elementwise passes between them, and on a 2-core CPU
those passes are not free. PyTorch's profiler on one full-size block in bfloat16 (9,477 patches; 2 cores of an
Intel Xeon with AMX, 2026-12-02): matrix products 530 ms, attention 269 ms, GELU 118 ms, copying the biases into
the outputs 50 ms, LayerNorms 19 ms, residual adds 8 ms. oneDNN (the library behind PyTorch's CPU matrix
products) can apply a bias, an activation and a sum to each tile of the product while the tile is still in the
core's cache: its "post-ops". PyTorch exposes them as `torch.ops.mkldnn._linear_pointwise` (the op Inductor's
freezing pass emits for `nn.Linear` on CPU). Measured on that machine, medians of 9 interleaved runs of one block:
768 ms plain, 602 ms fused (0.78x).

A block over many crops runs in passes of a few crops (`cpp_build.row_passes`: each pass's widest intermediate,
the MLP's [patches, 4304], under 32 MiB; 13 crops in bfloat16 run as 5 + 4 + 4): oneDNN's products into outputs
above that size pay for fresh memory pages every time. Measured on 2 cores of an Intel Xeon with AMX (2026-12-04),
medians of 7 interleaved runs: qkv 74 ms at 9,477 rows against 32 ms in passes of 2,916, up 103 against 43;
one whole block over 13 crops, medians of 11: 269 ms in one pass, 211-222 ms in passes of 3-5 crops; the whole
vision of the bench's 1176x910 image, medians of 5 interleaved: 6.69 s in one pass, 5.49 s in passes. Attention
is per crop, so the passes compute the same thing (oneDNN may round a product differently at another number of
rows: the tests hold float32 to 1e-5 and bfloat16 to the same greedy tokens, in one pass and in several).

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
from ..core.config import VisionConfig
from ..core.layers import layer_norm
from ..core.vit import PREFIX, attend_heads, qkv_bias
from . import cpp_build
from .cpp_build import onednn_computes_bfloat16, row_passes, runs_here

onednn = torch.ops.mkldnn


def fused_vit_block(x: Tensor, w: dict[str, Tensor], i: int, cfg: VisionConfig) -> Tensor:
    """`vit_block(x, w, i, cfg)` with fused products. x: [crops, 729, width] on CPU, float32 or bfloat16."""
    widest = max(3 * cfg.hidden_size, cfg.mlp_size) * x.element_size()  # bytes per patch: qkv's or the MLP's
    passes = min(x.shape[0], row_passes(x.shape[0] * x.shape[1], widest))  # whole crops, split evenly
    if passes > 1:
        return torch.cat([_fused_pass(crops, w, i, cfg) for crops in x.tensor_split(passes)])
    return _fused_pass(x, w, i, cfg)


def _fused_pass(x: Tensor, w: dict[str, Tensor], i: int, cfg: VisionConfig) -> Tensor:
    """The fused block on a few crops x: [crops, 729, width]."""
    p = f"{PREFIX}layers.{i}."
    h = layer_norm(x, w[p + "attn_lnorm.weight"], w[p + "attn_lnorm.bias"], cfg.norm_eps)
    qkv = onednn._linear_pointwise(h, w[p + "attn.qkv_w.weight"], qkv_bias(w, i), "none", [], "")  # [.., 3·width]
    h = attend_heads(qkv, cfg)  # [crops, 729, width]
    x = onednn._linear_pointwise.binary(h, x, w[p + "attn.out.weight"], w[p + "attn.out.bias"], "add")  # x + out(h)

    h = layer_norm(x, w[p + "ffn_lnorm.weight"], w[p + "ffn_lnorm.bias"], cfg.norm_eps)
    h = onednn._linear_pointwise(h, w[p + "ffn.up.weight"], w[p + "ffn.up.bias"], "gelu", [], "tanh")  # [.., 4304]
    return onednn._linear_pointwise.binary(h, x, w[p + "ffn.down.weight"], w[p + "ffn.down.bias"], "add")


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
    return True


def uninstall() -> None:
    """Back to the plain `vit_block`."""
    if layers.hooks.vit_block is _vit_block_hook:
        layers.hooks.vit_block = None
