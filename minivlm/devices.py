"""Where and in what precision minivlm runs: the device and dtype checks that come before any loading, and the
"auto" dtype (the checkpoint's own where the device computes in it natively, float32 elsewhere).

Used by `minivlm.load` (vlm.py), the command lines and the bench; the model in `minivlm.core` takes whatever
device and dtype its tensors have.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .formats.weights import stored_dtype


def device_time(device: torch.device) -> float:
    """A timestamp taken after the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


DEVICE_TYPES = ("cpu", "cuda", "mps")  # what minivlm runs on; torch knows more (meta, xla, ...) that hold no data here


def check_device(device: str | torch.device) -> torch.device:
    """The device, if this PyTorch can use it; else a ValueError saying what to use instead (before any loading)."""
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a string such as 'cpu', 'cuda', 'cuda:1' or 'mps', got {device!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"device {str(device)!r} is not a PyTorch device ({reason}); use 'cpu', 'cuda', 'cuda:N' "
                         "or 'mps'") from None
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"device {str(device)!r}: minivlm runs on {', '.join(DEVICE_TYPES)} (a {device.type!r} "
                         "device cannot run it); use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: no CUDA GPU is available to this PyTorch; use 'cpu'")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         "numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r}: Apple's MPS backend is not available here; use 'cpu'")
    return device


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to run in, if it is a floating-point torch dtype; else a ValueError (an int8 cast of the weights
    would run and answer nonsense)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype (torch.float32, torch.bfloat16, torch.float16), "
                         f"got {dtype!r}")
    return dtype


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def runs_natively(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether `device` computes in `dtype` at full speed: float32 everywhere; bfloat16 on CUDA GPUs that have
    it and on CPUs with AVX512-BF16 or AMX (elsewhere PyTorch emulates it, slower than float32)."""
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    if device.type == "cpu" and dtype == torch.bfloat16:
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or amx)
    return False


def choose_dtype(dtype: str | torch.dtype, checkpoint_dir: str | Path,
                 device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype to load in, and why. "auto": the checkpoint's stored dtype where `device` runs it natively,
    float32 elsewhere; a name ("bfloat16") or a torch.dtype: that dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype, "asked for"
    if dtype in DTYPES:
        return DTYPES[dtype], "asked for"
    if dtype != "auto":
        raise ValueError(f"dtype {dtype!r} is not one minivlm runs in; use 'auto', {', '.join(map(repr, DTYPES))} "
                         "or a torch.dtype")
    stored = stored_dtype(checkpoint_dir)
    name = str(stored).removeprefix("torch.")
    if runs_natively(stored, device):
        return stored, f"auto: the checkpoint's stored {name}, which this {device.type} runs natively"
    return torch.float32, (f"auto: the checkpoint is stored in {name}, which this {device.type} does not run "
                           "natively (no AVX512-BF16 or AMX on a CPU); float32 instead")
