"""Decoding on CPU in bfloat16, faster: two small C++ kernels (`cpu_decode.cpp`) for the two loops that read memory.

Generating one token multiplies one vector by every decoder matrix and the LM head (3.4 GB of bfloat16 weights
read for 1.7 G multiply-adds) and attends one query per head over the KV cache (another 0.2 GB at 1,800
positions). Both are bound by how fast memory streams, and PyTorch's CPU paths stream it slowly for these shapes:
measured on a 2-core AVX512-BF16 CPU, bfloat16 `F.linear` on one row reads 19 GB/s where this file's matrix-vector
product reads 32-49 GB/s (a plain `sum` over the same memory: 33-55 GB/s, the machine is shared and noisy), and
SDPA over the 28 layers' caches takes 20 ms per token against 9 ms here. The kernels are textbook loops,
vectorised: each thread reads its share of the memory once, front to back (on Intel CPUs four weight rows side
by side: 21 against 15 GB/s on a 2-core Xeon with AMX; `rows_side_by_side`).

A third kernel, `norm_rope`, does the decoder's q/k RMSNorm and RoPE in one pass over each head's row, with the
plain ops' roundings in their order: PyTorch runs them as about ten passes over float32 copies of q and k, 1-2 s
of a 1,774-token prefill on the Xeon; the kernel takes a few ms per layer.

`install()` plugs them into `minivlm.core.layers.hooks`: then `layers.linear` uses `linear` for inputs of at most
MAX_ROWS rows, `layers.attention` uses `attend` for one new token without a mask, and the decoder's q/k norm uses
`norm_rope`, wherever they apply: CPU, bfloat16, no autograd, a CPU with AVX512-BF16 and a C++ compiler to build
them with (once per kernel source and torch version, about 30 s, said on stderr; cached under
~/.cache/torch_extensions/minivlm_cpu_decode_<hash>). Everywhere else, and with MINIVLM_CPU_KERNELS=0, PyTorch's
own ops run. Same arithmetic as those: exact bfloat16 products summed in float32, one rounding to bfloat16 at the
end; only the order of the float32 sums differs (tests/accel/test_cpu_decode.py).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from ..core import layers
from .cpp_build import build

SOURCE = Path(__file__).with_name("cpu_decode.cpp")
MAX_ROWS = 4  # a decoding batch; from about 8 rows on, oneDNN (computing rather than streaming) is faster
ENABLED = os.environ.get("MINIVLM_CPU_KERNELS", "1") != "0"
CFLAGS = ["-O3", "-mavx512f", "-mavx512bf16", "-ffp-contract=off", "-fopenmp"]  # no FMA: norm_rope rounds as torch


def rows_side_by_side(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """How many weight rows the matrix-vector product reads at a time: 4 on Intel CPUs, 1 elsewhere (measured:
    cpu_decode.cpp's comment; 1 where the vendor cannot be read)."""
    try:
        intel = "GenuineIntel" in cpuinfo.read_text(errors="replace")
    except OSError:
        intel = False
    return 4 if intel else 1


SIDE_BY_SIDE = rows_side_by_side()


@functools.cache
def _kernels():
    """The compiled extension (built on the first call: cpp_build.py), or None where it cannot run here."""
    if not getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return None
    return build(SOURCE, CFLAGS, "the CPU decoding kernels", "decoding falls back to PyTorch's ops, about half as fast")


def available() -> bool:
    """Whether the kernels are built (building them on the first call) and not switched off."""
    return ENABLED and _kernels() is not None


def _applies(*tensors: Tensor) -> bool:
    return (ENABLED and all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))


def handles_linear(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear(x, weight)` runs here: a few rows of bfloat16 on CPU, nothing to differentiate."""
    return (_applies(x, weight) and x.numel() <= MAX_ROWS * x.shape[-1] and x.shape[-1] % 32 == 0
            and weight.is_contiguous() and _kernels() is not None)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias) for x [..., in] of at most MAX_ROWS rows (check `handles_linear` first)."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()  # [M, in]
    y = _kernels().gemv_bf16(rows, weight, SIDE_BY_SIDE)  # float32 [M, out]
    if bias is not None:
        y += bias.float()  # before the one rounding to bfloat16, as F.linear adds it
    return y.to(x.dtype).view(*x.shape[:-1], weight.shape[0])  # [..., out]


def handles_attention(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether `attend(q, k, v)` runs here: bfloat16 on CPU, contiguous rows of 32, 64 or 128 values."""
    head_dim = q.shape[-1]
    return (_applies(q, k, v) and head_dim in (32, 64, 128)
            and all(t.stride(-1) == 1 and t.stride(-2) == head_dim for t in (k, v)) and _kernels() is not None)


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Unmasked attention of q [B, Hkv, G, D] (G query heads per kv head, one token) over k, v [B, Hkv, L, D]."""
    return _kernels().attend_bf16(q.contiguous(), k, v, scale)  # [B, Hkv, G, D]


def handles_norm_rope(x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor) -> bool:
    """Whether `norm_rope` runs here: bfloat16 q or k [B, H, L, D] on CPU (D a multiple of 32, unit stride), float32
    cos and sin [B, 1, L, D] contiguous, nothing to differentiate."""
    return (_applies(x, weight) and x.dim() == 4 and x.shape[-1] % 32 == 0 and x.stride(-1) == 1
            and weight.is_contiguous() and cos.dtype == sin.dtype == torch.float32
            and cos.shape == sin.shape == (x.shape[0], 1, x.shape[2], x.shape[3])
            and cos.is_contiguous() and sin.is_contiguous() and _kernels() is not None)


def norm_rope(x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor) -> Tensor:
    """`apply_rope(rms_norm(x, weight, eps), cos, sin)` in one pass (check `handles_norm_rope` first)."""
    return _kernels().norm_rope_bf16(x, weight, eps, cos, sin)


def _norm_rope_hook(x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor) -> Tensor | None:
    return norm_rope(x, weight, eps, cos, sin) if handles_norm_rope(x, weight, cos, sin) else None


def _linear_hook(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    return linear(x, weight, bias) if handles_linear(x, weight) else None


def _attention_hook(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor | None:
    return attend(q, k, v, scale) if handles_attention(q, k, v) else None


def install() -> bool:
    """Plug the kernels into `core.layers.hooks` if they can run on this machine (building them on first use).

    Each call still checks that it applies (CPU, bfloat16, no autograd, the shapes), so installing is harmless
    for a model on another device. Returns whether they are installed.
    """
    if not available():
        return False
    layers.hooks.linear, layers.hooks.decode_attention = _linear_hook, _attention_hook
    layers.hooks.norm_rope = _norm_rope_hook
    return True


def uninstall() -> None:
    """Back to plain PyTorch everywhere."""
    if layers.hooks.linear is _linear_hook:
        layers.hooks.linear = None
    if layers.hooks.decode_attention is _attention_hook:
        layers.hooks.decode_attention = None
    if layers.hooks.norm_rope is _norm_rope_hook:
        layers.hooks.norm_rope = None
