"""The compiled ViT blocks (minivlm/accel/compiled_vit.py) against the plain `vit_block`: the official golden
features in float32, the same greedy tokens in bfloat16."""

import pytest
import torch
from conftest import FIXTURE_DIR, IMAGE_CASES, assert_close, case_id, case_images, demo_answers, features_for, golden

import minivlm
from minivlm.accel import compiled_vit
from minivlm.core import layers
from minivlm.core.vit import vit_features
from minivlm.tiny import DEMO_DIR


@pytest.fixture
def count_blocks(monkeypatch):
    """start(): install the compiled blocks (as `load(..., compile=True)` does) behind a counter of the blocks they
    run, and return its list; after the test they are taken out again."""
    def start() -> list[int]:
        compiled_vit.install()
        calls, hook = [], layers.hooks.vit_block
        monkeypatch.setattr(layers.hooks, "vit_block", lambda *args: calls.append(args[2]) or hook(*args))
        return calls

    yield start
    monkeypatch.undo()
    compiled_vit.uninstall()
    assert layers.hooks.vit_block is None


def test_float32_features_equal_the_official_golden_ones(vlm, count_blocks):
    """Compiled, the ViT still gives the official features (float32, 1e-5, as the plain path's parity test), and
    the compiled path really ran: every block of the fixture's ViT up to the deepest selected one (7)."""
    g = golden()
    case = next(c for c in IMAGE_CASES if c["name"] + ".vit_features" in g)
    calls = count_blocks()
    sample, compiled = features_for(vlm, case)
    assert calls == list(range(8))
    assert_close(compiled, g[case["name"] + ".vit_features"], "compiled vit_features")
    layers.hooks.vit_block = None  # the plain blocks, same input
    plain = vit_features(sample["images"], vlm.weights, vlm.cfg.vision)
    torch.testing.assert_close(compiled, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c["name"] == "rgba_500x300"], ids=case_id)
def test_bfloat16_fixture_greedy_tokens_unchanged(case, count_blocks):
    vlm = minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16, compile=True)
    calls = count_blocks()
    compiled = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    assert calls == list(range(8))
    layers.hooks.vit_block = None
    plain = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    assert compiled.token_ids == plain.token_ids


def test_bfloat16_demo_model_answers_unchanged(count_blocks):
    """The demo model tiles the example (thumbnail + tiles): compiled and plain give the same answers."""
    vlm = minivlm.load(DEMO_DIR, dtype=torch.bfloat16, compile=True)
    calls = count_blocks()
    compiled = demo_answers(vlm)
    assert len(calls) >= 4 * len(compiled)  # the demo ViT's blocks, for every question
    layers.hooks.vit_block = None
    plain = demo_answers(vlm)
    assert compiled == plain


def test_training_uses_the_plain_block(vlm):
    """With autograd on weights that need gradients the hook declines (None): the trainer's backward pass goes
    through the plain block."""
    w = {k: v.clone().requires_grad_(True) for k, v in vlm.weights.items() if ".layers.0." in k}
    x = torch.randn(1, 729, vlm.cfg.vision.hidden_size)
    assert compiled_vit._vit_block_hook(x, w, 0, vlm.cfg.vision) is None


def test_load_without_compile_takes_the_compiled_blocks_out(count_blocks):
    minivlm.load(FIXTURE_DIR, compile=True)
    assert layers.hooks.vit_block is compiled_vit._vit_block_hook
    minivlm.load(FIXTURE_DIR)
    assert layers.hooks.vit_block is None
