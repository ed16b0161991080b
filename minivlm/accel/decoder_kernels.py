"""The decoder on CPU in bfloat16, faster: small C++ kernels (`decoder_kernels.cpp`) for the two loops of decoding that
read memory and for the elementwise passes around the products (decoding and prefill alike).

Generating one token multiplies one vector by every decoder matrix and the LM head (3.4 GB of bfloat16 weights
read for 1.7 G multiply-adds) and attends one query per head over the KV cache (another 0.2 GB at 1,800
positions). Both are bound by how fast memory streams, and PyTorch's CPU paths stream it slowly for these shapes:
measured on a 2-core AVX512-BF16 CPU, bfloat16 `F.linear` on one row reads 19 GB/s where this file's matrix-vector
product reads 32-49 GB/s (a plain `sum` over the same memory: 33-55 GB/s, the machine is shared and noisy), and
SDPA over the 28 layers' caches takes 20 ms per token against 9 ms here. The kernels are textbook loops,
vectorised: each thread reads its share of the memory once, front to back (on Intel CPUs four weight rows side
by side: 21 against 15 GB/s on a 2-core Xeon with AMX; `rows_side_by_side`), each row asking for its data 16 KB
ahead of where it reads (one token's 3.44 GB on that Xeon: 30.4 against 27.3 GB/s).

Two more do the decoder's RMSNorms in one pass over each row, with the plain ops' roundings in their order:
`norm_rope`, the q/k norm and RoPE of each head (PyTorch runs them as about ten passes over float32 copies of q
and k, 1-2 s of a 1,774-token prefill on the Xeon; the kernel takes a few ms per layer), and `rms_norm`, the
norms of the hidden states before attention, before the MLP and at the end (five passes over a float32 copy);
`silu_gate`, the MLP's silu(gate) * value (two passes), likewise.

Products of more rows (a prompt's prefill, the connector's) run in oneDNN as before, but through its linear op
with the bias inside (`linear_onednn`: the op fused_vit.py uses) rather than `F.linear`, which copies the bias
into its output first and adds the product to it: the first token of the bench's 1176x910 image 8.79 against
9.14 s, medians of 5 interleaved (2 cores of an Intel Xeon with AMX, 2026-12-04).

A long prefill runs its MLP in passes of rows (`swiglu`), each pass's [rows, 2 x 6144] intermediate under
`cpp_build.LARGEST_REUSED_BLOCK` (`cpp_build.row_passes`: larger blocks come as fresh memory pages every time;
32 MiB with glibc's defaults, 64 MiB once `keep_freed_memory` ran): the same products and kernels on fewer rows
at a time, the same numbers. One layer's MLP over 1,774 tokens (43.6 MB) on 2 cores of an Intel Xeon with AMX
(2026-12-04), medians of 9 interleaved, with glibc's defaults: 82.6 ms in one pass, 70.2 in two. Without AMX
every product of a prompt (`linear_onednn` too) also runs in passes of at most `cpp_build.MOST_ROWS_PER_PASS`
rows, which oneDNN's AVX512-BF16 products run faster (measured there).

`install()` plugs them into `minivlm.core.layers.hooks`: then `layers.linear` uses `linear` for inputs of at most
MAX_ROWS rows and `linear_onednn` for more, `layers.attention` uses `attend` for one new token without a mask,
`layers.rms_norm` and `layers.silu_gate` use `rms_norm` and `silu_gate`, `layers.swiglu` runs in passes, and the
decoder's q/k norm uses `norm_rope`, wherever they apply: CPU, bfloat16, no autograd, a CPU with AVX512-BF16 and a
C++ compiler to build them with (once per kernel source and torch version, about 30 s, said on stderr; cached under
~/.cache/torch_extensions/minivlm_decoder_kernels_<hash>). Everywhere else, and with MINIVLM_CPU_KERNELS=0,
PyTorch's own ops run. Same arithmetic as those: exact bfloat16 products summed in float32, the same roundings to
bfloat16; only the order of the float32 sums differs, and silu's e^x (a polynomial here, Sleef's there) in its
last float32 bit (tests/accel/test_decoder_kernels.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..core import layers
from . import cpp_build
from .cpp_build import build, cpu_has, onednn_computes_bfloat16, row_passes, runs_here

SOURCE = Path(__file__).with_name("decoder_kernels.cpp")
MAX_ROWS = 4  # a decoding batch; from about 8 rows on, oneDNN (computing rather than streaming) is faster
CFLAGS = ["-O3", "-mavx512f", "-mavx512bf16", "-ffp-contract=off", "-fopenmp"]  # no FMA: norm_rope rounds as torch


def rows_side_by_side(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """How many weight rows the matrix-vector product reads at a time: 4 on Intel CPUs, 1 elsewhere (measured:
    decoder_kernels.cpp's comment; 1 where the vendor cannot be read)."""
    try:
        intel = "GenuineIntel" in cpuinfo.read_text(errors="replace")
    except OSError:
        intel = False
    return 4 if intel else 1


SIDE_BY_SIDE = rows_side_by_side()


@functools.cache
def _kernels():
    """The compiled extension (built on the first call: cpp_build.py), or None where it cannot run here."""
    if not cpu_has("avx512_bf16"):
        return None
    return build(SOURCE, CFLAGS, "the decoder's CPU kernels", "decoding falls back to PyTorch's ops, about half as fast")


def available() -> bool:
    """Whether the kernels are built (building them on the first call) and not switched off."""
    return cpp_build.ENABLED and _kernels() is not None


def handles_linear(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear(x, weight)` runs here: a few rows of bfloat16 on CPU, nothing to differentiate."""
    return (runs_here(x, weight) and x.numel() <= MAX_ROWS * x.shape[-1] and x.shape[-1] % 32 == 0
            and weight.is_contiguous() and _kernels() is not None)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias) for x [..., in] of at most MAX_ROWS rows (check `handles_linear` first)."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()  # [M, in]
    y = _kernels().gemv_bf16(rows, weight, SIDE_BY_SIDE)  # float32 [M, out]
    if bias is not None:
        y += bias.float()  # before the one rounding to bfloat16, as F.linear adds it
    return y.to(x.dtype).view(*x.shape[:-1], weight.shape[0])  # [..., out]


def handles_linear_onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether `linear_onednn` runs: bfloat16 on a CPU where oneDNN computes it natively, nothing to differentiate,
    not inside torch.compile (compiled_vit.py: Inductor lowers F.linear itself, and this op only for frozen
    weights)."""
    return (runs_here(x, weight, *([] if bias is None else [bias])) and not torch.compiler.is_compiling()
            and onednn_computes_bfloat16())


def in_row_passes(x: Tensor, passes: int, rows_fn: Callable[[Tensor], Tensor], out_width: int) -> Tensor:
    """`rows_fn` on x [..., in] as [rows, in], in `passes` passes of rows, the outputs stacked back -> [..., out]."""
    rows = x.reshape(-1, x.shape[-1])  # [rows, in]
    out = [rows_fn(part) for part in rows.tensor_split(passes)]  # [rows / passes, out] each: contiguous parts
    return (out[0] if len(out) == 1 else torch.cat(out)).view(*x.shape[:-1], out_width)  # [..., out]


def linear_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias) as oneDNN's linear op, the bias added to the float32 sums before the one rounding
    (check `handles_linear_onednn` first), in `row_passes` passes of rows."""
    passes = row_passes(x.numel() // x.shape[-1], weight.shape[0] * x.element_size())
    return in_row_passes(x, passes, lambda part: torch.ops.mkldnn._linear_pointwise(part, weight, bias, "none", [], ""),
                         weight.shape[0])


def handles_attention(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether `attend(q, k, v)` runs here: bfloat16 on CPU, contiguous rows of 32, 64 or 128 values."""
    head_dim = q.shape[-1]
    return (runs_here(q, k, v) and head_dim in (32, 64, 128)
            and all(t.stride(-1) == 1 and t.stride(-2) == head_dim for t in (k, v)) and _kernels() is not None)


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Unmasked attention of q [B, Hkv, G, D] (G query heads per kv head, one token) over k, v [B, Hkv, L, D]."""
    return _kernels().attend_bf16(q.contiguous(), k, v, scale)  # [B, Hkv, G, D]


def handles_norm_rope(x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor) -> bool:
    """Whether `norm_rope` runs here: bfloat16 q or k [B, H, L, D] on CPU (D a multiple of 32, unit stride), float32
    cos and sin [B, 1, L, D] contiguous, nothing to differentiate."""
    return (runs_here(x, weight) and x.dim() == 4 and x.shape[-1] % 32 == 0 and x.stride(-1) == 1
            and weight.is_contiguous() and cos.dtype == sin.dtype == torch.float32
            and cos.shape == sin.shape == (x.shape[0], 1, x.shape[2], x.shape[3])
            and cos.is_contiguous() and sin.is_contiguous() and _kernels() is not None)


def handles_rms_norm(x: Tensor, weight: Tensor) -> bool:
    """Whether `rms_norm` runs here: bfloat16 rows [..., D] on CPU (D a multiple of 32, unit stride), nothing to
    differentiate."""
    return (runs_here(x, weight) and x.dim() >= 1 and x.shape[-1] % 32 == 0 and x.stride(-1) == 1
            and weight.is_contiguous() and weight.shape == x.shape[-1:] and _kernels() is not None)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """`layers.rms_norm(x, weight, eps)` in one pass over each row (check `handles_rms_norm` first)."""
    return _kernels().rms_norm_bf16(x, weight, eps)


def handles_silu_gate(value_gate: Tensor) -> bool:
    """Whether `silu_gate` runs here: bfloat16 [..., 2n] contiguous on CPU (n a multiple of 16), no autograd."""
    return (runs_here(value_gate) and value_gate.dim() >= 1 and value_gate.shape[-1] % 32 == 0
            and value_gate.is_contiguous() and _kernels() is not None)


def silu_gate(value_gate: Tensor) -> Tensor:
    """`layers.silu_gate(value_gate)` in one pass (check `handles_silu_gate` first)."""
    return _kernels().silu_gate_bf16(value_gate)


def norm_rope(x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor) -> Tensor:
    """`apply_rope(rms_norm(x, weight, eps), cos, sin)` in one pass (check `handles_norm_rope` first)."""
    return _kernels().norm_rope_bf16(x, weight, eps, cos, sin)


def swiglu_passes(x: Tensor, up: Tensor, down: Tensor) -> int:
    """In how many passes over its rows `layers.swiglu(x, up, down)` runs: 1 unless its [rows, up rows]
    intermediate would pass cpp_build.LARGEST_REUSED_BLOCK."""
    if not runs_here(x, up, down) or x.dim() < 2:
        return 1
    rows = x.numel() // x.shape[-1]
    return min(rows, row_passes(rows, up.shape[0] * x.element_size()))


def swiglu(x: Tensor, up: Tensor, down: Tensor, passes: int | None = None) -> Tensor:
    """`layers.swiglu(x, up, down)` on x [..., in] in `passes` passes of rows (`swiglu_passes` unless given), each
    as the plain MLP."""
    return in_row_passes(x, passes or swiglu_passes(x, up, down),
                         lambda part: layers.linear(layers.silu_gate(layers.linear(part, up)), down), down.shape[0])


def _swiglu_hook(x: Tensor, up: Tensor, down: Tensor) -> Tensor | None:
    passes = swiglu_passes(x, up, down)
    return swiglu(x, up, down, passes) if passes > 1 else None


def _rms_norm_hook(x: Tensor, weight: Tensor, eps: float) -> Tensor | None:
    return rms_norm(x, weight, eps) if handles_rms_norm(x, weight) else None


def _silu_gate_hook(value_gate: Tensor) -> Tensor | None:
    return silu_gate(value_gate) if handles_silu_gate(value_gate) else None


def _norm_rope_hook(x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor) -> Tensor | None:
    return norm_rope(x, weight, eps, cos, sin) if handles_norm_rope(x, weight, cos, sin) else None


def _linear_hook(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    if handles_linear(x, weight):
        return linear(x, weight, bias)
    return linear_onednn(x, weight, bias) if handles_linear_onednn(x, weight, bias) else None


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
    layers.hooks.rms_norm, layers.hooks.norm_rope, layers.hooks.silu_gate = (_rms_norm_hook, _norm_rope_hook,
                                                                             _silu_gate_hook)
    layers.hooks.swiglu = _swiglu_hook
    return True


def uninstall() -> None:
    """Back to plain PyTorch everywhere."""
    if layers.hooks.linear is _linear_hook:
        layers.hooks.linear = None
    if layers.hooks.decode_attention is _attention_hook:
        layers.hooks.decode_attention = None
    if layers.hooks.rms_norm is _rms_norm_hook:
        layers.hooks.rms_norm = None
    if layers.hooks.norm_rope is _norm_rope_hook:
        layers.hooks.norm_rope = None
    if layers.hooks.silu_gate is _silu_gate_hook:
        layers.hooks.silu_gate = None
    if layers.hooks.swiglu is _swiglu_hook:
        layers.hooks.swiglu = None
