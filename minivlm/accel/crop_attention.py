"""The ViT's attention over each crop's 729 patches on Intel AMX tiles: a C++ kernel (`crop_attention.cpp`).

Why: on CPU in bfloat16 the ViT's attention (16 heads of 72 channels over 729 patches, 13 crops for the 1176x910
benchmark image) runs in PyTorch's SDPA at about 0.11 TFLOP/s, a fifth of the rate oneDNN's matrix products reach
on the same machine, and a third of a ViT block's time. Measured on 2 cores of an Intel Xeon with AMX
(2026-12-03), one block's attention, [13, 16, 729, 72], medians of 7 interleaved runs: SDPA 267 ms, this kernel
147 ms (0.55x). The kernel is the textbook two-pass softmax for a sequence this short: for 32 queries at a
time, all 729 scores on the AMX tiles, their softmax in float32, then P V on the tiles, each head's keys and
values held in the core's cache; it writes the heads side by side ([crops, 729, heads, 72]), so merging them
before the out projection copies nothing.

Arithmetic: bfloat16 products summed in float32 (as SDPA's), the softmax in float32 with numerators rounded to
bfloat16 for P V (as SDPA's flash kernel does), a final rounding to bfloat16; a max error against float32
attention like SDPA's own (tests/accel/test_crop_attention.py, with the same greedy tokens on the fixtures and
the demo model).

`install()` plugs it into `core.layers.hooks.full_attention` (`minivlm.load` does, beside the fused ViT blocks,
on a CPU with AMX for a bfloat16 model): it then runs every unmasked attention of several queries whose q, k, v
are slices of one tensor (the ViT's), in bfloat16 on CPU with nothing to differentiate; everything else, and
everything with MINIVLM_CPU_KERNELS=0, runs PyTorch's SDPA. Built on first use like `cpu_decode` (cpp_build.py).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from ..core import layers
from .cpp_build import build

SOURCE = Path(__file__).with_name("crop_attention.cpp")
CFLAGS = ["-O3", "-mavx512f", "-mavx512vl", "-mavx512bf16", "-mamx-tile", "-mamx-bf16", "-fopenmp"]
ENABLED = os.environ.get("MINIVLM_CPU_KERNELS", "1") != "0"  # the switch of every CPU fast path in minivlm.accel


def cpu_has_amx() -> bool:
    return (getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
            and getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


@functools.cache
def _kernel():
    """The compiled extension (built on the first call), or None where it cannot run here."""
    if not cpu_has_amx():
        return None
    module = build(SOURCE, CFLAGS, "the CPU attention kernel", "the ViT's attention runs in PyTorch's SDPA")
    return module if module is not None and module.amx_permitted() else None  # an OS may withhold the tiles


def available() -> bool:
    """Whether the kernel is built (building it on the first call) and not switched off."""
    return ENABLED and _kernel() is not None


def applies(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """bfloat16 on CPU, nothing to differentiate, one shape for q, k, v ([crops, heads, L, D], as many key heads as
    query heads) and the same strides with unit stride along D: slices of one qkv product."""
    return (ENABLED and q.dim() == 4 and q.shape == k.shape == v.shape
            and all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in (q, k, v))
            and q.stride() == k.stride() == v.stride() and q.stride(-1) == 1
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))
            and _kernel() is not None)


def crop_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(scale q kᵀ) v for q, k, v [crops, heads, L, D] (check `applies` first) -> [crops, heads, L, D], a
    view of the kernel's [crops, L, heads, D]."""
    return _kernel().crop_attention_bf16(q, k, v, scale).transpose(1, 2)


def _hook(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor | None:
    return crop_attention(q, k, v, scale) if applies(q, k, v) else None


def install() -> bool:
    """Plug the kernel into `core.layers.hooks` if it can run on this machine (building it on first use)."""
    if not available():
        return False
    layers.hooks.full_attention = _hook
    return True


def uninstall() -> None:
    """Back to PyTorch's SDPA."""
    if layers.hooks.full_attention is _hook:
        layers.hooks.full_attention = None
