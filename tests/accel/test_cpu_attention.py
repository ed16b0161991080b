"""The CPU attention kernel (minivlm/accel/cpu_attention.py), on AMX tiles and on AVX512-BF16 alone, against
PyTorch's: as close to float32 attention as SDPA in bfloat16 is, for the ViT's crops and the decoder's causal
grouped-query prefill; the same greedy tokens on the fixture and the demo model; and when it runs."""

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURE_DIR, IMAGE_CASES, case_id, case_images, demo_answers

import minivlm
from minivlm.accel import cpp_build, cpu_attention
from minivlm.accel.cpp_build import cpu_has
from minivlm.core import layers
from minivlm.tiny import DEMO_DIR

needs_kernel = pytest.mark.skipif(not cpu_has("avx512_bf16"), reason="the kernel needs a CPU with AVX512-BF16")
# Both paths where the CPU has AMX (the AVX-512 one is the whole kernel elsewhere), the AVX-512 one alone elsewhere.
PATHS = [pytest.param(False, id="avx512"),
         pytest.param(True, id="amx", marks=pytest.mark.skipif(not cpu_attention.cpu_has_amx(),
                                                                 reason="AMX tiles: CPUs with AMX only"))]


def qkv_slices(crops: int, heads: int, length: int, head_dim: int, seed: int = 0):
    """q, k, v [crops, heads, L, D] as the ViT makes them: slices of one [crops, L, 3, heads, D] product."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(crops, length, 3, heads, head_dim, generator=g).bfloat16().permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def prefill_qkv(batch: int, heads: int, kv_heads: int, length: int, head_dim: int, seed: int = 0):
    """q [B, H, L, D] and k, v [B, Hkv, L, D] as the decoder hands them over: q a transposed view of [B, L, H, D],
    k and v the first L positions of a KV cache with room for more."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, length, heads, head_dim, generator=g).bfloat16().transpose(1, 2)
    k, v = (torch.randn(batch, kv_heads, length + 50, head_dim, generator=g).bfloat16()[:, :, :length]
            for _ in range(2))
    return q, k, v


def assert_as_close_as_sdpa(ours, q, k, v, scale, causal):
    """Both compute in bfloat16 with float32 sums: our largest error against float32 attention on the same
    bfloat16 inputs is within 1.25 x SDPA's own (and both within 1 %: a few bfloat16 roundings)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # as core.layers.attention does
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale, is_causal=causal)
    sdpa_error = (F.scaled_dot_product_attention(q, k, v, scale=scale, is_causal=causal).float() - reference).abs()
    our_error = (ours.float() - reference).abs().max()
    assert our_error <= 1.25 * sdpa_error.max() + 1e-6
    torch.testing.assert_close(ours.float(), reference, rtol=1e-2, atol=1e-2)


@needs_kernel
@pytest.mark.parametrize("shape", [(13, 16, 729, 72),  # the release's ViT, 13 crops
                                   (2, 4, 729, 8),  # the fixture's
                                   (1, 3, 37, 13),  # odd sizes: padding of patches and channels
                                   (1, 2, 100, 128), (1, 2, 70, 160),  # head_dim over 96: two passes of P V
                                   (1, 2, 40, 112), (1, 2, 33, 40),  # 7 and 3 tiles of output columns
                                   (1, 1, 1, 72)])  # one patch
@pytest.mark.parametrize("on_tiles", PATHS)
def test_vit_crops_as_close_to_float32_as_sdpa(shape, on_tiles):
    q, k, v = qkv_slices(*shape)
    scale = shape[-1] ** -0.5
    assert cpu_attention.applies(q, k, v)
    ours = cpu_attention.attention(q, k, v, scale, causal=False, on_tiles=on_tiles)
    assert ours.shape == q.shape and ours.transpose(1, 2).is_contiguous()  # heads side by side in memory
    assert_as_close_as_sdpa(ours, q, k, v, scale, causal=False)


@needs_kernel
@pytest.mark.parametrize("shape", [(1, 16, 8, 1774, 128),  # the release's decoder on the 1176x910 bench prompt
                                   (2, 6, 3, 77, 64),  # two sequences, a length that is no multiple of 32
                                   (1, 4, 1, 33, 72),  # four query heads on one kv head, D padded
                                   (1, 2, 2, 1, 128)])  # one token
@pytest.mark.parametrize("on_tiles", PATHS)
def test_causal_grouped_query_prefill_as_close_to_float32_as_sdpa(shape, on_tiles):
    """Causal: row i sees keys 0..i only (a row that saw a later key would be off by far more than 1 %)."""
    q, k, v = prefill_qkv(*shape)
    scale = shape[-1] ** -0.5
    assert cpu_attention.applies(q, k, v)
    ours = cpu_attention.attention(q, k, v, scale, causal=True, on_tiles=on_tiles)
    assert ours.shape == q.shape and ours.transpose(1, 2).is_contiguous()
    assert_as_close_as_sdpa(ours, q, k, v, scale, causal=True)


@pytest.fixture
def count_calls(monkeypatch):
    """start(): a counter of the attentions the installed kernel runs; after the test the hooks are taken out."""
    def start() -> list[tuple]:
        assert layers.hooks.attention is cpu_attention._hook
        calls = []

        def counted(q, k, v, scale, causal):
            out = cpu_attention._hook(q, k, v, scale, causal)
            if out is not None:
                calls.append((tuple(q.shape), causal))
            return out

        monkeypatch.setattr(layers.hooks, "attention", counted)
        return calls

    yield start
    monkeypatch.undo()
    minivlm.accel.install_for(torch.device("cpu"), torch.float32)  # takes every CPU bfloat16 hook out


@needs_kernel
def test_buffers_kept_between_calls_change_nothing():
    """Each thread keeps its tile buffers from call to call while L and D stay the same: a call after calls with
    other values (full and causal, grouped-query) and other sizes returns the same bits as before them. Odd sizes,
    so that both the keys and the channels are padded."""
    q, k, v = qkv_slices(1, 3, 37, 13)
    before = cpu_attention.attention(q, k, v, 0.3, causal=False)
    big = [t * 50 for t in qkv_slices(2, 4, 37, 13, seed=1)]  # the same L and D, other values
    cpu_attention.attention(*big, 0.3, causal=False)
    cpu_attention.attention(*prefill_qkv(1, 4, 2, 37, 13, seed=2), 0.3, causal=True)
    cpu_attention.attention(*qkv_slices(1, 2, 100, 40, seed=3), 0.3, causal=False)  # other sizes: new buffers
    cpu_attention.attention(*big, 0.3, causal=True)
    assert torch.equal(cpu_attention.attention(q, k, v, 0.3, causal=False), before)


@needs_kernel
@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c["name"] == "rgba_500x300"], ids=case_id)
def test_bfloat16_fixture_greedy_tokens_unchanged(case, count_calls):
    vlm = minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)  # installs the kernel, as for any bfloat16 model
    calls = count_calls()
    fast = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    vit = [shape for shape, causal in calls if not causal]
    prefill = [shape for shape, causal in calls if causal]
    assert len(vit) == 8 and vit[0][1:] == (4, 729, 8)  # every ViT block that runs: 4 heads of 8
    # The prompt's prefill: every block but the last, whose one query that is read (the last position's) runs as a
    # decoding step does (decoder.run_decoder's last_only).
    assert len(prefill) == vlm.cfg.text.n_layers - 1 and prefill[0][1] == vlm.cfg.text.n_heads
    layers.hooks.attention = None
    plain = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    assert fast.token_ids == plain.token_ids


@needs_kernel
def test_bfloat16_demo_model_answers_unchanged(count_calls):
    vlm = minivlm.load(DEMO_DIR, dtype=torch.bfloat16)
    calls = count_calls()
    fast = demo_answers(vlm)
    assert len(calls) >= len(fast)
    layers.hooks.attention = None
    assert demo_answers(vlm) == fast


def test_declines_what_it_does_not_compute():
    """float32, autograd, fewer keys than queries, query heads that are no multiple of the kv heads, k and v laid
    out differently: the hook says "not mine" (None) and PyTorch's SDPA runs; without AVX512-BF16 it declines
    everything."""
    q, k, v = qkv_slices(1, 4, 20, 8)
    for causal in (False, True):
        assert cpu_attention._hook(q.float(), k.float(), v.float(), 1.0, causal) is None
        assert cpu_attention._hook(q.detach().requires_grad_(True), k, v, 1.0, causal) is None
        assert cpu_attention._hook(q, k[:, :, :10], v[:, :, :10], 1.0, causal) is None
        assert cpu_attention._hook(q, k[:, :3], v[:, :3], 1.0, causal) is None
        assert cpu_attention._hook(q, k, v.contiguous(), 1.0, causal) is None
    assert cpu_attention.applies(q, k, v) == cpu_has("avx512_bf16")
    assert cpu_attention.applies(q, k[:, :2], v[:, :2]) == cpu_has("avx512_bf16")  # grouped-query heads


@needs_kernel
@pytest.mark.skipif(cpu_has("amx_tile"), reason="a CPU without AMX")
def test_tiles_asked_for_without_amx_is_an_error():
    q, k, v = qkv_slices(1, 2, 20, 8)
    assert not cpu_attention.tiles()
    with pytest.raises(RuntimeError, match="AMX tiles asked for"):
        cpu_attention.attention(q, k, v, 1.0, causal=False, on_tiles=True)


def test_load_decides_whether_it_runs(monkeypatch):
    """bfloat16 on a CPU with AVX512-BF16: installed beside the fused blocks; compile=True, float32 or
    MINIVLM_CPU_KERNELS=0: not."""
    try:
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)
        assert (layers.hooks.attention is cpu_attention._hook) == cpu_attention.available()
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16, compile=True)
        assert layers.hooks.attention is None
        minivlm.load(FIXTURE_DIR)
        assert layers.hooks.attention is None
        monkeypatch.setattr(cpp_build, "ENABLED", False)  # MINIVLM_CPU_KERNELS=0
        minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)
        assert layers.hooks.attention is None
    finally:
        minivlm.accel.install_for(torch.device("cpu"), torch.float32)
