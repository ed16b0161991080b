"""Speed-ups kept outside the model: each plugs into `minivlm.core.layers.hooks` and can be switched off.

- `decoder_kernels`: on CPU in bfloat16, the two memory-bound loops of decoding and the decoder's elementwise passes
  (RMSNorms, q/k norm + RoPE, the SwiGLU gate) as small C++ kernels.
- `fused_vit`: on CPU in bfloat16, the ViT's blocks with bias, GELU and residual adds inside oneDNN's products.
- `amx_attention`: on CPUs with AMX in bfloat16, the ViT's attention over each crop and the decoder's causal
  prefill on the AMX tiles (C++).
- `compiled_vit`: the ViT's blocks through torch.compile (opt-in: `load(..., compile=True)`, `--compile`).
- `cpp_build.keep_freed_memory`: on CPU in bfloat16, glibc's malloc keeps freed memory for the next block instead
  of handing it back to the kernel (process-wide).

The model in `minivlm.core` never imports this package; the loader (`minivlm.load`) calls `install_for`.
"""

from __future__ import annotations

import torch


def install_for(device: torch.device, dtype: torch.dtype, compile: bool = False) -> None:
    """Install the speed-ups that apply to a model on `device` in `dtype` (none apply: nothing happens): the
    compiled ViT blocks if `compile`, else the fused ones and the AMX attention (ViT and prefill) on CPU in bfloat16 (the last model
    loaded decides)."""
    from . import amx_attention, compiled_vit, fused_vit

    compiled_vit.uninstall()
    fused_vit.uninstall()
    amx_attention.uninstall()
    cpu_bfloat16 = device.type == "cpu" and dtype == torch.bfloat16
    if compile:
        compiled_vit.install()  # alone: a C++ kernel inside would break torch.compile's graph
    elif cpu_bfloat16:
        fused_vit.install()
        amx_attention.install()
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
    """Which attention the ViT and the prefill run now: "amx" (amx_attention) or "sdpa" (PyTorch's), for the bench's
    report."""
    from ..core import layers
    from . import amx_attention

    return "amx" if layers.hooks.attention is amx_attention._hook else "sdpa"
