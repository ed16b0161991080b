"""The fused ViT blocks (minivlm/accel/fused_vit.py) against the plain `vit_block`: the official golden features and
a full-size block in float32 (1e-5), the same greedy tokens in bfloat16, and when the fast path runs or not."""

import pytest
import torch
from conftest import FIXTURE_DIR, IMAGE_CASES, assert_close, case_id, case_images, demo_answers, golden

import minivlm
from minivlm.accel import compiled_vit, cpp_build, fused_vit
from minivlm.core import layers
from minivlm.core.config import VisionConfig
from minivlm.core.generation import encode_images
from minivlm.core.vit import PREFIX, vit_block, vit_features, weight_shapes
from minivlm.formats.config_json import load_config
from minivlm.tiny import DEMO_DIR
from minivlm.tools.bench import REAL_CONFIG

BFLOAT16_NATIVE = cpp_build.onednn_computes_bfloat16()
needs_bfloat16 = pytest.mark.skipif(not BFLOAT16_NATIVE, reason="oneDNN computes bfloat16 natively only with "
                                                                "AVX512-BF16 or AMX; the fused blocks stay off here")


@pytest.fixture
def count_blocks(monkeypatch):
    """start(): a counter of the blocks the installed fused hook runs (it must be installed); after the test the
    hooks are taken out again."""
    def start() -> list[int]:
        assert layers.hooks.vit_block is fused_vit._vit_block_hook
        calls, hook = [], layers.hooks.vit_block

        def counted(*args):
            out = hook(*args)
            if out is not None:  # the fused block ran (None: it declined, the plain one runs)
                calls.append(args[2])
            return out

        monkeypatch.setattr(layers.hooks, "vit_block", counted)
        return calls

    yield start
    monkeypatch.undo()
    fused_vit.uninstall()
    assert layers.hooks.vit_block is None


@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c["name"] + ".vit_features" in golden()], ids=case_id)
def test_float32_features_equal_the_official_golden_ones(vlm, case):
    """Every block of the fixture's ViT fused (float32, which oneDNN runs on any CPU): the official features to
    1e-5, as the plain path's parity test."""
    sample = vlm.preprocess(case["prompt"], case_images(case))
    w, cfg = vlm.weights, vlm.cfg.vision
    fused = vit_features(sample["images"], w, cfg, run_block=lambda x, i: fused_vit.fused_vit_block(x, w, i, cfg))
    assert_close(fused, golden()[case["name"] + ".vit_features"], "fused vit_features")


def test_float32_full_size_block_equals_the_plain_one():
    """One block at the release's sizes (width 1152, 16 heads of 72, MLP 4304; minivlm/configs/jina-vlm), random
    weights at the scale of a trained ViT's, three crops: fused and plain agree to float32 rounding (1e-5)."""
    cfg: VisionConfig = load_config(REAL_CONFIG).vision
    g = torch.Generator().manual_seed(0)
    w = {}
    for key, shape in weight_shapes(cfg).items():
        if key.startswith(PREFIX + "layers.3."):
            scale = 0.02 if len(shape) == 2 else 0.1
            w[key] = torch.randn(shape, generator=g) * scale + (1.0 if key.endswith("lnorm.weight") else 0.0)
    x = torch.randn(3, cfg.grid**2, cfg.hidden_size, generator=g)
    with torch.inference_mode():
        torch.testing.assert_close(fused_vit.fused_vit_block(x, w, 3, cfg), vit_block(x, w, 3, cfg),
                                   rtol=1e-5, atol=1e-5)


def test_crop_groups_keep_the_widest_intermediate_under_the_reused_block(monkeypatch):
    """The release's ViT MLP rows: 729 x 4304 x 2 bytes = 6.3 MB a crop in bfloat16, so 5 crops (31.4 MB) fit in
    32 MiB (glibc's default) and 6 do not, 10 fit in 64 MiB (`keep_freed_memory`'s); float32 rows are twice as
    wide. Never more groups than crops, one group for one crop."""
    cfg: VisionConfig = load_config(REAL_CONFIG).vision
    monkeypatch.setattr(cpp_build, "LARGEST_REUSED_BLOCK", 32 << 20)
    assert [fused_vit.crop_groups(n, cfg, torch.bfloat16) for n in (1, 5, 6, 13, 20)] == [1, 1, 2, 3, 4]
    assert [fused_vit.crop_groups(n, cfg, torch.float32) for n in (1, 2, 3, 13)] == [1, 1, 2, 7]
    monkeypatch.setattr(cpp_build, "LARGEST_REUSED_BLOCK", 64 << 20)
    assert [fused_vit.crop_groups(n, cfg, torch.bfloat16) for n in (1, 10, 11, 13)] == [1, 1, 2, 2]


@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c["name"] + ".connector_out" in golden()
                                  and c["token_counts"]["n_crops"] > 2], ids=case_id)
def test_float32_vision_in_groups_equals_the_official_connector_output(vlm, case, monkeypatch):
    """The vision a crop at a time through the installed hook (float32 let in, 1 byte per group): one
    `encode_images` call per crop, the fused blocks inside, and the official connector output to 1e-5."""
    monkeypatch.setattr(fused_vit, "runs_here", lambda *tensors: True)  # float32 here: the groups alone are tested
    monkeypatch.setattr(cpp_build, "LARGEST_REUSED_BLOCK", 1)
    monkeypatch.setattr(layers.hooks, "encode_images", fused_vit.encode_in_groups)
    monkeypatch.setattr(layers.hooks, "vit_block", fused_vit._vit_block_hook)
    groups, encode = [], fused_vit.encode_images
    monkeypatch.setattr(fused_vit, "encode_images", lambda w, cfg, crops, masks: groups.append(len(crops)) or encode(
        w, cfg, crops, masks))
    sample = vlm.preprocess(case["prompt"], case_images(case))
    out = encode_images(vlm.weights, vlm.cfg, sample["images"], sample["image_masks"])
    assert groups == [1] * case["token_counts"]["n_crops"]
    assert_close(out, golden()[case["name"] + ".connector_out"], "connector_out, a crop at a time")


@needs_bfloat16
@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c["name"] == "rgba_500x300"], ids=case_id)
@pytest.mark.parametrize("largest_block", [cpp_build.LARGEST_REUSED_BLOCK, 1], ids=["one_group", "a_group_per_crop"])
def test_bfloat16_fixture_greedy_tokens_unchanged(case, largest_block, count_blocks, monkeypatch):
    """Fused blocks, the crops in one group and one at a time: the greedy tokens of the plain vision."""
    vlm = minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)  # installs the fused blocks, as for any bfloat16 model
    monkeypatch.setattr(cpp_build, "LARGEST_REUSED_BLOCK", largest_block)  # after load: keep_freed_memory sets it
    calls = count_blocks()
    fused = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    crops = len(vlm.preprocess(case["prompt"], case_images(case))["images"])
    groups = 1 if largest_block > 1 else crops
    assert calls == list(range(8)) * groups  # the fixture's blocks up to the deepest selected one, all fused
    fused_vit.uninstall()
    plain = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    assert fused.token_ids == plain.token_ids


@needs_bfloat16
def test_bfloat16_demo_model_answers_unchanged(count_blocks):
    """The demo model tiles the example (thumbnail + tiles): fused and plain give the same answers."""
    vlm = minivlm.load(DEMO_DIR, dtype=torch.bfloat16)
    calls = count_blocks()
    fused = demo_answers(vlm)
    assert len(calls) >= 4 * len(fused)
    fused_vit.uninstall()
    plain = demo_answers(vlm)
    assert fused == plain


def test_the_hook_declines_float32_and_training(vlm):
    """Only bfloat16 runs fused (float32 keeps PyTorch's products, exactly the plain block); with autograd on
    weights that need gradients the hook declines too, so the trainer's backward pass goes through the plain block."""
    w = {k: v for k, v in vlm.weights.items() if ".layers.0." in k}
    x = torch.randn(1, 729, vlm.cfg.vision.hidden_size)
    assert fused_vit._vit_block_hook(x, w, 0, vlm.cfg.vision) is None  # float32
    w16 = {k: v.bfloat16().requires_grad_(True) for k, v in w.items()}
    assert fused_vit._vit_block_hook(x.bfloat16(), w16, 0, vlm.cfg.vision) is None


def test_load_decides_which_blocks_run(monkeypatch):
    """bfloat16 on CPU: fused, the crops in groups, glibc asked to keep freed memory; compile=True: compiled
    instead; float32: plain; MINIVLM_CPU_KERNELS=0: plain, glibc left alone."""
    kept = []
    monkeypatch.setattr(cpp_build, "keep_freed_memory", lambda: kept.append(True))
    try:
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)
        assert layers.hooks.vit_block is fused_vit._vit_block_hook
        assert layers.hooks.encode_images is fused_vit.encode_in_groups and kept == [True]
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16, compile=True)
        assert layers.hooks.vit_block is compiled_vit._vit_block_hook and layers.hooks.encode_images is None
        minivlm.load(FIXTURE_DIR)
        assert layers.hooks.vit_block is None and layers.hooks.encode_images is None
        monkeypatch.setattr(cpp_build, "ENABLED", False)  # MINIVLM_CPU_KERNELS=0
        kept.clear()
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)
        assert layers.hooks.vit_block is None and layers.hooks.encode_images is None and kept == []
    finally:
        compiled_vit.uninstall()
        fused_vit.uninstall()
