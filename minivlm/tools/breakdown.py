"""`python -m minivlm.bench ... --breakdown`: where a first token's time goes, hook by hook.

The speed-ups of minivlm.accel plug into the model through `core.layers.hooks` (a whole ViT block, the vision in
groups of crops, the attention, the decoder's linear layers, MLP, norms). `timed_hooks` wraps every installed hook
with a clock for the length of a `with` block and records, per hook, its calls and its *own* seconds: a hook that
calls other hooks (the vision's groups run ViT blocks, a ViT block runs the attention) is charged its time minus
theirs, so the rows add up to the time spent inside hooks. What no hook ran (the plain PyTorch code: embeddings,
residual adds, the patch embedding, ...) is the phase's time minus that sum: the "rest" row.

`first_token_breakdown` runs one first token in two phases, so each row says where it ran: the vision (ViT and
connector over all crops), then the prefill of the prompt with those features and the first token. Attention is
split by kind: the ViT's over each crop and the prefill's causal one. A hook that declines a call (returns None,
so the plain code runs) gets no row: that call, and the plain code after it, count where they ran, in the own time
of the hook that called them or in the rest. The hooks are timed by the host's clock without synchronizing a
device: minivlm.accel is CPU only, so on CUDA no hook is installed and the rows are the two phases' rests.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from ..core import layers
from ..core.config import ModelConfig
from ..core.generation import encode_images
from ..core.sampler import SamplingSettings
from ..devices import device_time
from ..vlm import generate_ids


def _row(name: str, args: tuple) -> str:
    """The row a hook call is charged to: its name, the attention split by causal (prefill) or not (ViT)."""
    if name == "attention":
        return "attention, causal (prefill)" if args[4] else "attention, full (ViT crops)"
    return name


@contextmanager
def timed_hooks(phase: str, rows: dict[str, list]) -> Iterator[None]:
    """Every installed hook timed while inside: rows[f"{phase}: {row}"] = [calls, own seconds], added to."""
    installed = {name: hook for name, hook in vars(layers.hooks).items() if hook is not None}
    child_seconds = [0.0]  # one entry per open hook call (and the bottom): time spent in the hooks it called

    def clocked(name: str, hook: Callable) -> Callable:
        def timed(*args):
            child_seconds.append(0.0)
            start = time.perf_counter()
            out = hook(*args)  # an exception ends the timing: the stack is this `with` block's alone
            seconds = time.perf_counter() - start
            inner = child_seconds.pop()
            if out is not None:  # declined (None): no row; the caller, a hook or the rest, keeps this time
                child_seconds[-1] += seconds  # the caller's own time excludes this call
                row = rows.setdefault(f"{phase}: {_row(name, args)}", [0, 0.0])
                row[0], row[1] = row[0] + 1, row[1] + seconds - inner
            return out
        return timed

    for name, hook in installed.items():
        setattr(layers.hooks, name, clocked(name, hook))
    try:
        yield
    finally:
        for name, hook in installed.items():
            setattr(layers.hooks, name, hook)


def first_token_breakdown(weights: dict, cfg: ModelConfig, batch: dict, dtype: torch.dtype) -> dict[str, list]:
    """One first token of `batch`, vision then prefill, every hook timed: {row: [calls, own seconds]}, each phase's
    hooks the most time first, then its "rest" (its time outside any hook) and "total" rows."""
    device = batch["input_ids"].device
    rows: dict[str, list] = {}
    totals: dict[str, float] = {}
    start = device_time(device)
    with torch.inference_mode(), timed_hooks("vision", rows):
        features = encode_images(weights, cfg, batch["images"], batch["image_masks"])
    totals["vision"] = device_time(device) - start
    start = device_time(device)
    with timed_hooks("prefill", rows):
        generate_ids(weights, cfg, batch, max_new_tokens=1, settings=SamplingSettings(), stop_ids=[], dtype=dtype,
                     features=features)
    totals["prefill"] = device_time(device) - start
    ordered: dict[str, list] = {}  # each phase's hooks, the most time first, then its rest and its total
    for phase, total in totals.items():
        hooks = sorted(((row, r) for row, r in rows.items() if row.startswith(f"{phase}: ")),
                       key=lambda item: -item[1][1])
        ordered.update(hooks)
        ordered[f"{phase}: rest"] = [1, total - sum(seconds for _, (_, seconds) in hooks)]
        ordered[f"{phase}: total"] = [1, total]
    return ordered
