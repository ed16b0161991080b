"""Speed-ups kept outside the model: each plugs into `minivlm.core.layers.hooks` and can be switched off.

- `cpu_decode`: the two memory-bound loops of bfloat16 decoding on CPU as small C++ kernels.
- `compiled_vit`: the ViT's blocks through torch.compile (opt-in: `load(..., compile=True)`, `--compile`).

The model in `minivlm.core` never imports this package; the loader (`minivlm.load`) calls `install_for`.
"""

from __future__ import annotations

import torch


def install_for(device: torch.device, dtype: torch.dtype, compile: bool = False) -> None:
    """Install the speed-ups that apply to a model on `device` in `dtype` (none apply: nothing happens), and the
    compiled ViT blocks if `compile` (else take them out: the last model loaded decides)."""
    from . import compiled_vit

    if compile:
        compiled_vit.install()
    else:
        compiled_vit.uninstall()
    if device.type == "cpu" and dtype == torch.bfloat16:
        from . import cpu_decode

        cpu_decode.install()
