"""The ViT's attention on AMX tiles (minivlm/accel/crop_attention.py) against PyTorch's: as close to float32
attention as SDPA in bfloat16 is, the same greedy tokens on the fixture and the demo model, and when it runs."""

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURE_DIR, IMAGE_CASES, case_id, case_images, demo_answers

import minivlm
from minivlm.accel import crop_attention
from minivlm.core import layers
from minivlm.tiny import DEMO_DIR

needs_amx = pytest.mark.skipif(not crop_attention.cpu_has_amx(), reason="the kernel runs on CPUs with AMX only")


def qkv_slices(crops: int, heads: int, length: int, head_dim: int, seed: int = 0):
    """q, k, v [crops, heads, L, D] as the ViT makes them: slices of one [crops, L, 3, heads, D] product."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(crops, length, 3, heads, head_dim, generator=g).bfloat16().permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


@needs_amx
@pytest.mark.parametrize("shape", [(13, 16, 729, 72),  # the release's ViT, 13 crops
                                   (2, 4, 729, 8),  # the fixture's
                                   (1, 3, 37, 13),  # odd sizes: padding of patches and channels
                                   (1, 2, 100, 128), (1, 2, 70, 160),  # head_dim over 96: two passes of P V
                                   (1, 1, 1, 72)])  # one patch
def test_as_close_to_float32_attention_as_sdpa_in_bfloat16(shape):
    """Both compute in bfloat16 with float32 sums: the kernel's largest error against float32 attention on the
    same bfloat16 inputs is within 1.25 x SDPA's own (and both within 1 %: a few bfloat16 roundings)."""
    q, k, v = qkv_slices(*shape)
    scale = shape[-1] ** -0.5
    assert crop_attention.applies(q, k, v)
    ours = crop_attention.crop_attention(q, k, v, scale)
    assert ours.shape == q.shape and ours.transpose(1, 2).is_contiguous()  # heads side by side in memory
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale)
    sdpa_error = (F.scaled_dot_product_attention(q, k, v, scale=scale).float() - reference).abs().max()
    our_error = (ours.float() - reference).abs().max()
    assert our_error <= 1.25 * sdpa_error + 1e-6
    torch.testing.assert_close(ours.float(), reference, rtol=1e-2, atol=1e-2)


@pytest.fixture
def count_calls(monkeypatch):
    """start(): a counter of the attentions the installed kernel runs; after the test the hooks are taken out."""
    def start() -> list[tuple]:
        assert layers.hooks.full_attention is crop_attention._hook
        calls = []

        def counted(q, k, v, scale):
            out = crop_attention._hook(q, k, v, scale)
            if out is not None:
                calls.append(tuple(q.shape))
            return out

        monkeypatch.setattr(layers.hooks, "full_attention", counted)
        return calls

    yield start
    monkeypatch.undo()
    minivlm.accel.install_for(torch.device("cpu"), torch.float32)  # takes every CPU bfloat16 hook out


@needs_amx
@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c["name"] == "rgba_500x300"], ids=case_id)
def test_bfloat16_fixture_greedy_tokens_unchanged(case, count_calls):
    vlm = minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)  # installs the kernel, as for any bfloat16 model
    calls = count_calls()
    fast = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    assert len(calls) == 8 and calls[0][1:] == (4, 729, 8)  # every ViT block that runs: 4 heads of 8
    layers.hooks.full_attention = None
    plain = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    assert fast.token_ids == plain.token_ids


@needs_amx
def test_bfloat16_demo_model_answers_unchanged(count_calls):
    vlm = minivlm.load(DEMO_DIR, dtype=torch.bfloat16)
    calls = count_calls()
    fast = demo_answers(vlm)
    assert len(calls) >= len(fast)
    layers.hooks.full_attention = None
    assert demo_answers(vlm) == fast


def test_declines_what_it_does_not_compute():
    """float32, autograd, grouped-query shapes (fewer key heads), q, k, v that are not slices of one tensor: the
    hook says "not mine" (None) and PyTorch's SDPA runs; on a CPU without AMX it declines everything."""
    q, k, v = qkv_slices(1, 4, 20, 8)
    assert crop_attention._hook(q.float(), k.float(), v.float(), 1.0) is None
    trainable = q.detach().requires_grad_(True)
    assert crop_attention._hook(trainable, k, v, 1.0) is None
    assert crop_attention._hook(q, k[:, :2], v[:, :2], 1.0) is None
    assert crop_attention._hook(q.contiguous(), k, v, 1.0) is None
    assert crop_attention.applies(q, k, v) == crop_attention.cpu_has_amx()


def test_load_decides_whether_it_runs(monkeypatch):
    """bfloat16 on a CPU with AMX: installed beside the fused blocks; compile=True, float32 or
    MINIVLM_CPU_KERNELS=0: not."""
    try:
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)
        assert (layers.hooks.full_attention is crop_attention._hook) == crop_attention.available()
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16, compile=True)
        assert layers.hooks.full_attention is None
        minivlm.load(FIXTURE_DIR)
        assert layers.hooks.full_attention is None
        monkeypatch.setattr(crop_attention, "ENABLED", False)  # MINIVLM_CPU_KERNELS=0
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)
        assert layers.hooks.full_attention is None
    finally:
        minivlm.accel.install_for(torch.device("cpu"), torch.float32)
