"""What the machine can do, measured in the bench's own run: memory read bandwidth, the matrix-multiply rate, the
prompt's matrix products alone at their own shapes, and the process's peak memory (`bench.py` sets its timings
against them). Each probe says what it measures and why it is measured that way on a shared, noisy machine.
"""

from __future__ import annotations

import resource
import sys

import torch

from ..core.config import ModelConfig
from ..devices import device_time
from .flops import Product


def read_bandwidth_gbps(device: torch.device, gigabytes: float = 1.0, repeats: int = 7) -> float:
    """Memory read bandwidth: the best time of reading a buffer far larger than any cache (`read_rate_gbps`)."""
    return read_rate_gbps(torch.ones(int(gigabytes * 1e9) // 4, dtype=torch.float32, device=device), repeats)


def read_rate_gbps(tensor: torch.Tensor, repeats: int = 3) -> float:
    """GB/s of reading `tensor` (contiguous, far larger than any cache), the best of `repeats`. On a tensor the
    model already holds (the LM head, 0.62 GB), a probe that allocates nothing, so it can sit right before and after
    each timed decode without raising the peak memory: on a shared machine the bandwidth swings (32-56 GB/s within
    minutes on the README's), and a probe minutes away from the decode may see another machine.

    It takes the maximum of the raw bytes: one instruction per 64 bytes, so the reading and not the arithmetic sets
    the pace, whatever the dtype. A sum does not: on 2 cores of an Intel Xeon with AMX (2026-12-04) summing the
    bfloat16 LM head ran at 26.7-27.7 GB/s where the byte maximum read it at 32.9-34.5 (a 1 GB float32 sum
    31.7-32.8, its byte maximum 32.6-34.2)."""
    raw = tensor.view(torch.uint8)
    best = float("inf")
    for _ in range(repeats):
        start = device_time(tensor.device)
        raw.amax()
        best = min(best, device_time(tensor.device) - start)
    return raw.numel() / best / 1e9


def matmul_tflops(device: torch.device, dtype: torch.dtype, rows: int = 4 * 729,
                  seconds: float = 2.0) -> tuple[float, float]:
    """The matrix library's rate in `dtype` on the ViT MLP's two products over 4 crops (29 GFLOP each, shapes it
    runs well), the faster of the two: (sustained, burst) in TFLOP/s. Sustained: products back to back for
    `seconds`, all their FLOP over all their time, the rate a prompt of many seconds meets; burst: the best single
    product. They differ where the CPU slows its matrix units after a fraction of a second of full use: on 2 cores
    of an Intel Xeon with AMX, 2.3 TFLOP/s for the first 0.15 s, then 0.6-0.9 (2026-12-02). The roofline uses the
    sustained rate. Attention and smaller shapes run slower, so it bounds the prompt's rate from above."""
    generator = torch.Generator(device=device).manual_seed(0)
    sustained = burst = 0.0
    for fan_in, fan_out in ((1152, 4304), (4304, 1152)):
        x = torch.randn(rows, fan_in, generator=generator, device=device).to(dtype)
        weight = (torch.randn(fan_out, fan_in, generator=generator, device=device) * 0.02).to(dtype)
        flop = 2 * rows * fan_in * fan_out
        torch.nn.functional.linear(x, weight)  # warm-up: oneDNN picks and builds its kernel on the first call
        start = now = device_time(device)
        products = 0
        while now - start < seconds:
            before = now
            torch.nn.functional.linear(x, weight)
            now, products = device_time(device), products + 1
            burst = max(burst, flop / (now - before) / 1e12)
        sustained = max(sustained, products * flop / (now - start) / 1e12)
    return sustained, burst


def time_products(products: list[Product], device: torch.device, dtype: torch.dtype) -> float:
    """Seconds of the prompt's matrix products alone: each shape `count` times back to back, as the prompt meets
    them (random numbers; each shape warmed up once). Nothing else runs, no attention, no elementwise work: what
    the matrix library does on this machine at these shapes, which bounds what any implementation built on it can
    reach. Its weights, inputs and outputs are allocated one shape at a time (at most 0.2 GB for the release)."""
    generator = torch.Generator(device=device).manual_seed(0)
    total = 0.0
    for product in products:  # drawn in `dtype` at once: no float32 copies raising the peak memory
        x = torch.randn(product.rows, product.fan_in, generator=generator, device=device, dtype=dtype)
        weight = torch.randn(product.fan_out, product.fan_in, generator=generator, device=device, dtype=dtype) * 0.02
        torch.nn.functional.linear(x, weight)  # warm-up: oneDNN builds its kernel for the shape on the first call
        start = device_time(device)
        for _ in range(product.count):
            torch.nn.functional.linear(x, weight)
        total += device_time(device) - start
    return total


def decode_bytes_per_token(weights: dict, cfg: ModelConfig) -> int:
    """Weight bytes every decode step must read: the decoder blocks, the final norm and the LM head (not the ViT,
    not the embedding table, of which one row is read). The KV cache comes on top: `kv_cache_bytes_per_token`."""
    return sum(t.numel() * t.element_size() for k, t in weights.items()
               if k.startswith("model.language_model.layers.") or k in ("model.language_model.ln_f.weight",
                                                                          "lm_head.weight"))


def kv_cache_bytes_per_token(cfg: ModelConfig, positions: float, itemsize: int) -> float:
    """KV-cache bytes a decode step must read when its token attends over `positions` positions: every layer's
    keys and values, [kv_heads, positions, head_dim] each. For the bench's prompt (1,774 tokens, 64 new) about
    0.21 GB in bfloat16, 6 % on top of the decoder's 3.44 GB of weights."""
    text = cfg.text
    return 2 * text.n_layers * text.n_kv_heads * text.head_dim * itemsize * positions


def peak_rss_gb() -> float:
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kilobytes * (1 if sys.platform == "darwin" else 1024) / 1e9
