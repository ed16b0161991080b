"""Speed-ups kept outside the model: each plugs into `minivlm.core.layers.hooks` and can be switched off.

- `decoder_kernels`: on CPU in bfloat16, the two memory-bound loops of decoding and the decoder's elementwise passes
  (RMSNorms, q/k norm + RoPE, the SwiGLU gate) as small C++ kernels.
- `fused_vit`: on CPU in bfloat16, the ViT's blocks with bias, GELU and residual adds inside oneDNN's products.
- `cpu_attention`: on CPUs with AVX512-BF16 in bfloat16, the ViT's attention over each crop and the decoder's
  causal prefill (C++), on the AMX tiles where the CPU has them.
- `compiled_vit`: the ViT's blocks through torch.compile (opt-in: `load(..., compile=True)`, `--compile`).
- `cpp_build.keep_freed_memory`: on CPU in bfloat16, glibc's malloc keeps freed memory for the next block instead
  of handing it back to the kernel (process-wide).

The model in `minivlm.core` never imports this package; the loader (`minivlm.load`) calls `install_for`.
"""

from __future__ import annotations

import torch


def install_for(device: torch.device, dtype: torch.dtype, compile: bool = False) -> None:
    """Install the speed-ups that apply to a model on `device` in `dtype` (none apply: nothing happens): the
    compiled ViT blocks if `compile`, else the fused ones and the attention kernel (ViT and prefill) on CPU in
    bfloat16 (the last model loaded decides)."""
    from . import compiled_vit, cpu_attention, fused_vit

    compiled_vit.uninstall()
    fused_vit.uninstall()
    cpu_attention.uninstall()
    cpu_bfloat16 = device.type == "cpu" and dtype == torch.bfloat16
    if compile:
        compiled_vit.install()  # alone: a C++ kernel inside would break torch.compile's graph
    elif cpu_bfloat16:
        fused_vit.install()
        cpu_attention.install()
    if cpu_bfloat16:
        from . import cpp_build, decoder_kernels

        decoder_kernels.install()
        if cpp_build.ENABLED:
            cpp_build.keep_freed_memory()  # process-wide, for good: see its docstring


def vit_blocks() -> str:
    """Which ViT blocks run now: "compiled", "fused" or "plain" (for the bench's report)."""
    from ..core import layers
    from . import compiled_vit, fused_vit

    return {compiled_vit._vit_block_hook: "compiled", fused_vit._vit_block_hook: "fused"}.get(layers.hooks.vit_block,
                                                                                            "plain")


def attention_kernel() -> str:
    """Which attention the ViT and the prefill run now, for the bench's report: "amx" or "avx512" (cpu_attention's
    kernel on AMX tiles or AVX512-BF16 alone), or "sdpa" (PyTorch's)."""
    from ..core import layers
    from . import cpu_attention

    if layers.hooks.attention is not cpu_attention._hook:
        return "sdpa"
    return "amx" if cpu_attention.tiles() else "avx512"
