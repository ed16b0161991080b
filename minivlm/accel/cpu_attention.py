"""Attention of many queries on CPU in bfloat16: the ViT's over each crop's 729 patches and the decoder's causal
prefill, as one C++ kernel (`cpu_attention.cpp`), on Intel AMX tiles where the CPU has them, else on AVX512-BF16's
dot products (AMD EPYC from Zen 4 on, Intel from Cooper Lake on).

Why: on CPU in bfloat16 PyTorch's SDPA runs these at a fraction of the rate oneDNN's matrix products reach on the
same machine. Measured on 2 cores of an Intel Xeon with AMX (2026-12-04), medians of 15 interleaved runs: one
ViT block's attention [13 crops, 16 heads, 729, 72] 40.0 ms against SDPA's 81.9; one decoder layer's causal
prefill of 1,774 tokens (16 query heads over 8 kv heads of 128) 9.6 ms against 21.1 for SDPA (after
`repeat_interleave` of the kv heads, as `core.layers.attention` feeds it). Without AMX, on 2 cores of an AMD EPYC
with AVX512-BF16 (2026-12-04, medians of 15 interleaved runs): 105 ms against 264, and 39 ms against 104.
The kernel is the textbook two-pass softmax for sequences this short: for 32 queries at a time, all their scores,
the softmax in float32, then P V, a head's keys and values held in the core's cache (and kept for the next query
head that shares them); causal rows stop at their own position. It writes the heads side by side ([B, L, heads,
D]), so merging them before the out projection copies nothing.

Arithmetic: bfloat16 products summed in float32 (as SDPA's), the softmax in float32 with numerators rounded to
bfloat16 for P V (as SDPA's flash kernel does; their exponential is therefore computed to 7.5e-5, not to float32's
last bit), a final rounding to bfloat16: a max error against float32 attention like SDPA's own, on either path
(tests/accel/test_cpu_attention.py, with the same greedy tokens on the fixtures and the demo model).

`install()` plugs it into `core.layers.hooks.attention` (`minivlm.load` does, beside the fused ViT blocks, on a
CPU with AVX512-BF16 for a bfloat16 model): it then runs every unmasked attention of several queries, full or
causal, with as many keys as queries (the ViT's, a whole prompt's prefill), in bfloat16 on CPU with nothing to
differentiate; everything else (a follow-up turn's masked prefill, decoding), and everything with
MINIVLM_CPU_KERNELS=0, runs as before. Built on first use like `decoder_kernels` (cpp_build.py).
"""

from __future__ import annotations

import functools
from pathlib import Path

from torch import Tensor

from ..core import layers
from . import cpp_build
from .cpp_build import build, cpu_has, runs_here

SOURCE = Path(__file__).with_name("cpu_attention.cpp")
CFLAGS = ["-O3", "-mavx512f", "-mavx512vl", "-mavx512bf16", "-mamx-tile", "-mamx-bf16", "-fopenmp"]
MAX_ROW_STRIDE = 1 << 26  # the kernel gathers keys with 32-bit byte offsets


@functools.cache
def _kernel():
    """The compiled extension (built on the first call), or None where it cannot run here. Built with the AMX
    instructions on any CPU with AVX512-BF16: they run only where `tiles()` says so."""
    if not cpu_has("avx512_bf16"):
        return None
    return build(SOURCE, CFLAGS, "the CPU attention kernel", "attention runs in PyTorch's SDPA")


def cpu_has_amx() -> bool:
    return cpu_has("amx_tile", "avx512_bf16")


@functools.cache
def tiles() -> bool:
    """Whether the kernel runs on AMX tiles here: the CPU has them and Linux gives them to this process."""
    return cpu_has_amx() and _kernel() is not None and _kernel().amx_permitted()


def available() -> bool:
    """Whether the kernel is built (building it on the first call) and not switched off."""
    return cpp_build.ENABLED and _kernel() is not None


def applies(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """bfloat16 on CPU, nothing to differentiate; q [B, Hq, L, D] and k, v [B, Hkv, L, D] (as many keys as queries,
    Hq a multiple of Hkv) with unit stride along D, k and v with the same strides."""
    return (runs_here(q, k, v) and q.dim() == k.dim() == 4 and k.shape == v.shape and k.stride() == v.stride()
            and q.shape[0] == k.shape[0] and q.shape[2:] == k.shape[2:] and q.shape[1] % k.shape[1] == 0
            and q.stride(-1) == k.stride(-1) == 1 and k.stride(2) < MAX_ROW_STRIDE and _kernel() is not None)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool, on_tiles: bool | None = None) -> Tensor:
    """softmax(scale q kᵀ) v, causal or full (check `applies` first) -> [B, Hq, L, D], a view of the kernel's
    [B, L, Hq, D]. `on_tiles`: AMX tiles or AVX512-BF16 alone (the tests run both); default: tiles where they are."""
    on_tiles = tiles() if on_tiles is None else on_tiles
    if on_tiles and not tiles():
        raise RuntimeError("cpu_attention: AMX tiles asked for on a CPU or OS without them")
    return _kernel().attention_bf16(q, k, v, scale, causal, on_tiles).transpose(1, 2)


def _hook(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool) -> Tensor | None:
    return attention(q, k, v, scale, causal) if applies(q, k, v) else None


def install() -> bool:
    """Plug the kernel into `core.layers.hooks` if it can run on this machine (building it on first use)."""
    if not available():
        return False
    layers.hooks.attention = _hook
    return True


def uninstall() -> None:
    """Back to PyTorch's SDPA."""
    if layers.hooks.attention is _hook:
        layers.hooks.attention = None
