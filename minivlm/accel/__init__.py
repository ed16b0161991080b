"""Speed-ups kept outside the model: each plugs into `minivlm.core.layers.hooks` and can be switched off.

- `cpu_decode`: the two memory-bound loops of bfloat16 decoding on CPU as small C++ kernels.
- `fused_vit`: on CPU in bfloat16, the ViT's blocks with bias, GELU and residual adds inside oneDNN's products.
- `crop_attention`: on CPUs with AMX in bfloat16, the ViT's attention over each crop on the AMX tiles (C++).
- `compiled_vit`: the ViT's blocks through torch.compile (opt-in: `load(..., compile=True)`, `--compile`).

The model in `minivlm.core` never imports this package; the loader (`minivlm.load`) calls `install_for`.
"""

from __future__ import annotations

import torch


def install_for(device: torch.device, dtype: torch.dtype, compile: bool = False) -> None:
    """Install the speed-ups that apply to a model on `device` in `dtype` (none apply: nothing happens): the
    compiled ViT blocks if `compile`, else the fused ones and the AMX attention on CPU in bfloat16 (the last model
    loaded decides)."""
    from . import compiled_vit, crop_attention, fused_vit

    compiled_vit.uninstall()
    fused_vit.uninstall()
    crop_attention.uninstall()
    cpu_bfloat16 = device.type == "cpu" and dtype == torch.bfloat16
    if compile:
        compiled_vit.install()  # alone: a C++ kernel inside would break torch.compile's graph
    elif cpu_bfloat16:
        fused_vit.install()
        crop_attention.install()
    if cpu_bfloat16:
        from . import cpu_decode

        cpu_decode.install()


def vit_blocks() -> str:
    """Which ViT blocks run now: "compiled", "fused" or "plain" (for the bench's report)."""
    from ..core import layers
    from . import compiled_vit, fused_vit

    return {compiled_vit._vit_block_hook: "compiled", fused_vit._vit_block_hook: "fused"}.get(layers.hooks.vit_block,
                                                                                            "plain")


def vit_attention() -> str:
    """Which attention the ViT runs now: "amx" (crop_attention) or "sdpa" (PyTorch's), for the bench's report."""
    from ..core import layers
    from . import crop_attention

    return "amx" if layers.hooks.full_attention is crop_attention._hook else "sdpa"
