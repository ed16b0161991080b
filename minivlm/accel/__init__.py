"""Speed-ups kept outside the model: each plugs into `minivlm.core.layers.hooks` and can be switched off.

- `cpu_decode`: the two memory-bound loops of bfloat16 decoding on CPU as small C++ kernels.

The model in `minivlm.core` never imports this package; the loader (`minivlm.load`) calls `install_for`.
"""

from __future__ import annotations

import torch


def install_for(device: torch.device, dtype: torch.dtype) -> None:
    """Install the speed-ups that apply to a model on `device` in `dtype` (none apply: nothing happens)."""
    if device.type == "cpu" and dtype == torch.bfloat16:
        from . import cpu_decode

        cpu_decode.install()
