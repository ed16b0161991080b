"""breakdown.py: every installed hook timed, each charged its own time (not the hooks it calls), declined calls
charged nothing, the hooks put back afterwards; a first token's rows on the fixture's architecture."""

from types import SimpleNamespace

import pytest
import torch
from conftest import FIXTURE_DIR

from minivlm.accel import install_for, vit_blocks
from minivlm.core import layers
from minivlm.formats.config_json import load_config
from minivlm.tools import breakdown
from minivlm.tools.random_init import random_init_batch, random_weights, synthetic_image


def test_each_hook_is_charged_its_own_time(monkeypatch):
    clock = [0.0]  # a fake clock the fake hooks advance: the accounting, not the machine, is under test
    monkeypatch.setattr(breakdown, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def rms_norm(x, weight, eps):  # an outer hook: 2 s of its own, a declined call (its own too), a nested hook
        clock[0] += 2.0
        layers.linear(x, torch.ones(4, 4))
        return layers.silu_gate(torch.cat([x, x], -1))

    def silu_gate(value_gate):
        clock[0] += 5.0
        return value_gate[..., :value_gate.shape[-1] // 2]

    def linear(x, weight, bias):  # declines: the plain F.linear runs, outside any hook
        clock[0] += 0.5
        return None

    def attention(q, k, v, scale, causal):
        clock[0] += 3.0 if causal else 7.0
        return torch.zeros_like(q)

    for name, hook in (("rms_norm", rms_norm), ("silu_gate", silu_gate), ("linear", linear),
                       ("attention", attention)):
        monkeypatch.setattr(layers.hooks, name, hook)
    x, q = torch.ones(2, 4), torch.ones(1, 2, 3, 4)
    rows = {}
    with breakdown.timed_hooks("phase", rows):
        layers.rms_norm(x, torch.ones(4), 1e-6)
        layers.linear(x, torch.ones(3, 4))
        layers.attention(q, q, q, causal=True)
        layers.attention(q, q, q)
        layers.attention(q, q, q)
    assert rows == {"phase: rms_norm": [1, 2.5], "phase: silu_gate": [1, 5.0],
                    "phase: attention, causal (prefill)": [1, 3.0], "phase: attention, full (ViT crops)": [2, 14.0]}
    assert (layers.hooks.rms_norm, layers.hooks.linear, layers.hooks.attention) == (rms_norm, linear, attention)


def test_first_token_rows_add_up_to_each_phase():
    cfg = load_config(FIXTURE_DIR)
    weights = random_weights(cfg, torch.bfloat16, torch.device("cpu"))
    before = vars(layers.hooks).copy()
    install_for(torch.device("cpu"), torch.bfloat16)  # as the loader does: the hooks that apply here
    try:
        rows = breakdown.first_token_breakdown(weights, cfg, random_init_batch(cfg, synthetic_image(640, 480)),
                                               torch.bfloat16)
        fused = vit_blocks() == "fused"
    finally:
        vars(layers.hooks).update(before)
    for phase in ("vision", "prefill"):
        mine = {row: seconds for row, (_, seconds) in rows.items() if row.startswith(f"{phase}: ")}
        total = mine.pop(f"{phase}: total")
        assert total > 0 and all(seconds >= 0 for seconds in mine.values())
        assert sum(mine.values()) == pytest.approx(total)  # the hooks' own times and the rest: the whole phase
    if fused:  # CPU bfloat16 with oneDNN: the ViT's blocks and their attention run as hooks
        assert rows["vision: vit_block"][0] >= 1 and rows["vision: attention, full (ViT crops)"][0] >= 1
