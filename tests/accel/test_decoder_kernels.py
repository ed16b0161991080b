"""The decoder's CPU kernels (minivlm/decoder_kernels.cpp) against PyTorch's ops, alone and inside a whole generation."""


import pytest
import torch
import torch.nn.functional as F
from conftest import CASES, FIXTURE_DIR, case_images, demo_answers

import minivlm
from minivlm.accel import cpp_build, decoder_kernels
from minivlm.core import layers
from minivlm.core.layers import rms_norm, swiglu
from minivlm.core.rope import apply_rope, rope_angles
from minivlm.formats.image_io import open_image
from minivlm.tiny import DEMO_DIR

TINY_MODEL = DEMO_DIR

# Kernels and PyTorch both sum exact bfloat16 x bfloat16 products in float32, in different orders: before rounding
# they differ by float32 rounding noise (measured ~1e-7 of sum |w x|; 1e-5 allowed), and the one rounding to
# bfloat16 can then land one bfloat16 step apart (2^-8 relative) when the sum sits near a rounding boundary.
SUM_RTOL = 1e-5
BF16_STEP = 2.0**-8


@pytest.fixture(scope="module")
def kernels():
    built = decoder_kernels._kernels()
    if built is None:
        pytest.skip("decoder's CPU kernels unavailable here (they need AVX512-BF16 and a C++ compiler)")
    return built


@pytest.mark.parametrize("side_by_side", [1, 4])  # both ways of reading the weights, whatever this CPU picks
@pytest.mark.parametrize("rows", [1, 2, 3, 8])
@pytest.mark.parametrize("out_features, in_features", [(1, 32), (5, 64), (257, 96), (4096, 2048), (64, 6144)])
def test_gemv_sums_equal_float64(kernels, rows, out_features, in_features, side_by_side):
    g = torch.Generator().manual_seed(out_features * 31 + rows)
    x = torch.randn(rows, in_features, generator=g).bfloat16()
    w = (torch.randn(out_features, in_features, generator=g) * 0.02).bfloat16()
    got = kernels.gemv_bf16(x, w, side_by_side)  # float32 [rows, out]
    exact = x.double() @ w.double().T
    scale = x.double().abs() @ w.double().abs().T  # the size of what was summed
    assert got.dtype == torch.float32 and got.shape == (rows, out_features)
    assert ((got.double() - exact).abs() <= SUM_RTOL * scale + 1e-30).all()


@pytest.mark.parametrize("shape", [(64,), (1, 64), (3, 1, 64), (4, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_matches_f_linear(kernels, shape, with_bias):
    g = torch.Generator().manual_seed(len(shape) + 10 * with_bias)
    x = torch.randn(shape, generator=g).bfloat16()
    w = torch.randn(40, 64, generator=g).bfloat16()
    bias = torch.randn(40, generator=g).bfloat16() if with_bias else None
    assert decoder_kernels.handles_linear(x, w)
    fast, plain = decoder_kernels.linear(x, w, bias), F.linear(x, w, bias)
    assert fast.dtype == plain.dtype == torch.bfloat16 and fast.shape == plain.shape
    torch.testing.assert_close(fast.float(), plain.float(), rtol=BF16_STEP, atol=1e-6)
    assert (fast == plain).float().mean() > 0.9  # mostly bit-identical; the rest one rounding step apart


ONEDNN_BFLOAT16 = cpp_build.onednn_computes_bfloat16()


@pytest.mark.skipif(not ONEDNN_BFLOAT16, reason="oneDNN computes bfloat16 natively only with AVX512-BF16 or AMX")
@pytest.mark.parametrize("shape", [(5, 64), (2, 37, 2048)])  # more rows than MAX_ROWS: a prompt's products
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_onednn_rounds_the_float32_sum_once(shape, with_bias):
    """Many rows: oneDNN's linear with the bias inside is the exact float64 product + bias up to float32 summation
    noise and one rounding to bfloat16, and F.linear's numbers or one rounding step from them."""
    g = torch.Generator().manual_seed(len(shape) + 10 * with_bias)
    x = torch.randn(shape, generator=g).bfloat16()
    w = (torch.randn(96, shape[-1], generator=g) * 0.05).bfloat16()
    bias = torch.randn(96, generator=g).bfloat16() if with_bias else None
    assert decoder_kernels.handles_linear_onednn(x, w, bias) and not decoder_kernels.handles_linear(x, w)
    fast, plain = decoder_kernels.linear_onednn(x, w, bias), F.linear(x, w, bias)
    assert fast.dtype == torch.bfloat16 and fast.shape == plain.shape
    exact = x.double() @ w.double().T + (0 if bias is None else bias.double())
    torch.testing.assert_close(fast.double(), exact, rtol=BF16_STEP, atol=1e-4)
    torch.testing.assert_close(fast.float(), plain.float(), rtol=2 * BF16_STEP, atol=1e-4)
    assert (fast == plain).float().mean() > 0.9


@pytest.mark.parametrize("batch, kv_heads, group, length, head_dim", [(1, 8, 2, 1800, 128), (2, 2, 1, 5, 32),
                                                                       (3, 1, 4, 77, 64)])
def test_attend_equals_float64_softmax_attention(kernels, batch, kv_heads, group, length, head_dim):
    g = torch.Generator().manual_seed(length)
    cache = torch.randn(2, batch, kv_heads, length + 9, head_dim, generator=g).bfloat16()  # capacity > length
    k, v = cache[0, :, :, :length], cache[1, :, :, :length]  # views, as decoder.py passes the cache
    q = torch.randn(batch, kv_heads, group, head_dim, generator=g).bfloat16()
    assert decoder_kernels.handles_attention(q, k, v)
    got = decoder_kernels.attend(q, k, v, head_dim**-0.5)
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) * head_dim**-0.5, dim=-1)
    exact = probs @ v.double()
    sdpa = F.scaled_dot_product_attention(q, k, v, scale=head_dim**-0.5)
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    # one bfloat16 rounding of the output, like SDPA's (whose own error is shown for scale)
    torch.testing.assert_close(got.double(), exact, rtol=BF16_STEP, atol=1e-3)
    assert (got.double() - exact).abs().max() <= (sdpa.double() - exact).abs().max() * 1.5 + 1e-6


@pytest.mark.parametrize("batch, heads, length, head_dim", [(1, 16, 1774, 128), (2, 8, 7, 128), (1, 4, 1, 32)])
def test_norm_rope_rounds_as_the_plain_ops(kernels, batch, heads, length, head_dim):
    """q/k norm + RoPE in one pass against `apply_rope(rms_norm(...))` on slices of a qkv product, as the decoder
    has them: the same roundings in the same order, so equal but where the float32 sum of squares, summed in
    another order, moves a normed value across a bfloat16 rounding boundary (measured: 8 of 3.6 M values); that one
    step of a normed value, turned by RoPE, moves an output by at most one bfloat16 step of the head's largest."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(batch, length, 3 * heads * head_dim, generator=g).bfloat16() * 3
    x = qkv[..., :heads * head_dim].view(batch, length, heads, head_dim).transpose(1, 2)  # [B, H, L, D]
    weight = (torch.rand(head_dim, generator=g) + 0.5).bfloat16()
    cos, sin = rope_angles(torch.arange(length).expand(batch, length) + 3, head_dim, 1e6)
    assert decoder_kernels.handles_norm_rope(x, weight, cos, sin)
    ours, plain = decoder_kernels.norm_rope(x, weight, 1e-6, cos, sin), apply_rope(rms_norm(x, weight, 1e-6), cos, sin)
    assert ours.shape == plain.shape and ours.dtype == torch.bfloat16
    differ = ours != plain
    assert differ.float().mean() < 1e-5
    largest = plain.float().abs().max()
    torch.testing.assert_close(ours[differ].float(), plain[differ].float(), rtol=0, atol=BF16_STEP * largest)


@pytest.mark.parametrize("shape", [(1, 1774, 2048), (2, 7, 2048), (1, 1, 32)])
def test_rms_norm_rounds_as_the_plain_ops(kernels, shape):
    """The hidden states' RMSNorm in one pass against `layers.rms_norm`'s five (a prompt's [1, 1774, 2048] as the
    decoder has it, a batch of two, one short row): the same roundings in the same order, so equal but where the
    float32 sum of squares, summed in another order, moves a normed value across a bfloat16 rounding boundary
    (measured: 27 of 3.6 M values). One step of a normed value is at most 2^-7 of it; times the weight and rounded
    again, the outputs differ by at most 2^-7 of the output plus one more step: 2^-6 = 4 BF16_STEP."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).bfloat16() * 3
    weight = (torch.rand(shape[-1], generator=g) + 0.5).bfloat16()
    assert decoder_kernels.handles_rms_norm(x, weight)
    ours, plain = decoder_kernels.rms_norm(x, weight, 1e-6), rms_norm(x, weight, 1e-6)
    assert ours.shape == plain.shape and ours.dtype == torch.bfloat16
    differ = ours != plain
    assert differ.float().mean() < 1e-4
    torch.testing.assert_close(ours[differ].float(), plain[differ].float(), rtol=4 * BF16_STEP, atol=0)


@pytest.mark.parametrize("shape", [(1, 1774, 12288), (3, 64), (2, 1, 32)])
def test_silu_gate_rounds_as_the_plain_ops(kernels, shape):
    """silu(gate) * value in one pass against `layers.silu_gate`'s chunk, silu and product (a prompt's MLP, [value;
    gate] of 6,144 each; small rows): the same roundings, so equal but where e^-g, ours a polynomial and PyTorch's
    Sleef's, differ in their last float32 bit and the silu falls on the other side of a bfloat16 rounding boundary;
    then, as for RMSNorm above, the outputs are within 2^-6 of each other. Gates over [-100, 100]: e^-g overflows
    to inf for the largest negative ones in both."""
    g = torch.Generator().manual_seed(1)
    value_gate = torch.randn(*shape, generator=g).bfloat16() * 4
    value_gate[..., -1] = -100.0  # the last gate: e^100 overflows
    assert decoder_kernels.handles_silu_gate(value_gate)
    value, gate = value_gate.chunk(2, dim=-1)
    ours, plain = decoder_kernels.silu_gate(value_gate), F.silu(gate) * value
    assert ours.shape == plain.shape and ours.dtype == torch.bfloat16
    differ = ours != plain
    assert differ.float().mean() < 1e-4
    torch.testing.assert_close(ours[differ].float(), plain[differ].float(), rtol=4 * BF16_STEP, atol=0)


@pytest.mark.parametrize("largest_block, rows, passes", [(32 << 20, 1774, 2), (64 << 20, 1774, 1),
                                                         (8 * 12288 * 2, 40, 5)])
def test_swiglu_in_passes_equals_one_pass(kernels, monkeypatch, largest_block, rows, passes):
    """The decoder's MLP at the release's sizes (width 2048, [value; gate] of 6,144 each). A 1,774-token prompt's
    [1774, 12288] bfloat16 intermediate (43.6 MB) is over 32 MiB (glibc's default): two passes, one under
    64 MiB (`cpp_build.keep_freed_memory`'s); 40 rows when a pass may hold 8: five
    passes (more than decoder_kernels.MAX_ROWS rows each, so oneDNN's products as in one pass). The same numbers as
    one pass but where oneDNN sums a product in another order at another row count (measured: bit for bit at 887
    rows against 1,774; 0.5 % of the outputs at 8 rows against 40, by at most 2^-7): an intermediate one bfloat16
    step apart, carried through the down product, so at most 2^-5 absolute on outputs up to about 4. Passes by
    memory alone here (the cap on rows without AMX: the next test)."""
    monkeypatch.setattr(cpp_build, "LARGEST_REUSED_BLOCK", largest_block)
    monkeypatch.setattr(cpp_build, "MOST_ROWS_PER_PASS", None)
    monkeypatch.setattr(layers.hooks, "swiglu", None)  # `swiglu` below: the plain MLP, in one pass
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, rows, 2048, generator=g).bfloat16()
    up = (torch.randn(12288, 2048, generator=g) * 0.02).bfloat16()
    down = (torch.randn(2048, 6144, generator=g) * 0.02).bfloat16()
    assert decoder_kernels.swiglu_passes(x, up, down) == passes
    assert decoder_kernels.swiglu_passes(x.float(), up.float(), down.float()) == 1  # float32: the plain MLP
    with torch.inference_mode():
        in_passes, one_pass = decoder_kernels.swiglu(x, up, down), swiglu(x, up, down)
    assert (in_passes != one_pass).float().mean() < 0.01
    torch.testing.assert_close(in_passes.float(), one_pass.float(), rtol=0, atol=2**-5)


@pytest.mark.skipif(not cpp_build.onednn_computes_bfloat16(), reason="oneDNN's bfloat16 products: AVX512-BF16 or AMX")
def test_prompt_rows_in_passes_of_at_most_1024_give_the_same_bits(monkeypatch):
    """Without AMX a prompt's products run in passes of at most MOST_ROWS_PER_PASS rows (cpp_build's measurement):
    the bench's 1,774-token prefill in two, for the qkv product (`linear_onednn`) and the MLP (`swiglu_passes`),
    with the same bits as one pass (oneDNN sums each output row in the same order at 887 rows as at 1,774)."""
    monkeypatch.setattr(cpp_build, "LARGEST_REUSED_BLOCK", 1 << 40)  # memory sets no passes here
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 1774, 2048, generator=g).bfloat16()
    qkv, bias = (torch.randn(4096, 2048, generator=g) * 0.02).bfloat16(), torch.randn(4096, generator=g).bfloat16()
    up = (torch.randn(12288, 2048, generator=g) * 0.02).bfloat16()
    down = (torch.randn(2048, 6144, generator=g) * 0.02).bfloat16()
    with torch.inference_mode():
        monkeypatch.setattr(cpp_build, "MOST_ROWS_PER_PASS", 1024)
        assert decoder_kernels.swiglu_passes(x, up, down) == 2 and cpp_build.row_passes(1024, 2) == 1
        in_passes = decoder_kernels.linear_onednn(x, qkv, bias), decoder_kernels.swiglu(x, up, down)
        monkeypatch.setattr(cpp_build, "MOST_ROWS_PER_PASS", None)
        assert decoder_kernels.swiglu_passes(x, up, down) == 1
        one_pass = decoder_kernels.linear_onednn(x, qkv, bias), decoder_kernels.swiglu(x, up, down)
    assert in_passes[0].shape == (1, 1774, 4096)
    assert all(torch.equal(a, b) for a, b in zip(in_passes, one_pass))


def test_demo_model_answers_with_the_mlp_in_passes(kernels, monkeypatch):
    """The demo model's prompts (thumbnail + tiles) with every MLP of more than 8 rows in passes of 8 (more than
    MAX_ROWS each: oneDNN's products, as in one pass): the same greedy tokens as the MLP in one pass."""
    vlm = minivlm.load(TINY_MODEL, dtype=torch.bfloat16)
    up_rows = vlm.weights["model.language_model.layers.0.ffn.up.weight"].shape[0]
    monkeypatch.setattr(cpp_build, "LARGEST_REUSED_BLOCK", 8 * up_rows * 2)  # 8 bfloat16 rows of the up product
    passes = []
    original = decoder_kernels.swiglu_passes
    monkeypatch.setattr(decoder_kernels, "swiglu_passes", lambda *args: passes.append(original(*args)) or passes[-1])
    in_passes = demo_answers(vlm)
    assert max(passes) > 1  # the prefills ran their MLPs in passes
    monkeypatch.setattr(layers.hooks, "swiglu", None)
    assert demo_answers(vlm) == in_passes


def test_only_decoding_shapes_use_the_kernels(kernels, monkeypatch):
    w = torch.zeros(16, 64, dtype=torch.bfloat16)
    assert decoder_kernels.handles_linear(torch.zeros(4, 64, dtype=torch.bfloat16), w)
    assert not decoder_kernels.handles_linear(torch.zeros(5, 64, dtype=torch.bfloat16), w)  # a prompt: oneDNN's GEMM
    assert not decoder_kernels.handles_linear(torch.zeros(1, 64), w.float())  # float32
    assert not decoder_kernels.handles_linear(torch.zeros(1, 48, dtype=torch.bfloat16), torch.zeros(16, 48).bfloat16())
    assert not decoder_kernels.handles_linear(torch.zeros(1, 64, dtype=torch.bfloat16, requires_grad=True), w)  # training
    angles = torch.zeros(1, 1, 3, 16), torch.zeros(1, 1, 3, 16)  # the fixture's 16-wide heads: the plain ops
    assert not decoder_kernels.handles_norm_rope(torch.zeros(1, 2, 3, 16, dtype=torch.bfloat16), w[0, :16], *angles)
    kv = torch.zeros(1, 2, 10, 72, dtype=torch.bfloat16)  # the pooler's 72-wide heads: SDPA
    assert not decoder_kernels.handles_attention(torch.zeros(1, 2, 1, 72, dtype=torch.bfloat16), kv, kv)
    monkeypatch.setattr(cpp_build, "ENABLED", False)  # MINIVLM_CPU_KERNELS=0
    assert not decoder_kernels.handles_linear(torch.zeros(1, 64, dtype=torch.bfloat16), w)


def count_calls(monkeypatch, name: str) -> list:
    calls, original = [], getattr(decoder_kernels, name)
    monkeypatch.setattr(decoder_kernels, name, lambda *args: calls.append(1) or original(*args))
    return calls


@pytest.mark.parametrize("model_dir, n_layers, uses_attend", [(FIXTURE_DIR, 3, False), (TINY_MODEL, 4, True)])
def test_generation_with_and_without_the_kernels(kernels, monkeypatch, model_dir, n_layers, uses_attend):
    """bf16 generation: the decoding steps run on the kernels (the fixture's 16-wide heads leave attention to
    SDPA; the tiny model's 32-wide heads use both) and give PyTorch's tokens, and its logits within the rounding
    steps above carried through the layers: 0.05 absolute, or two bfloat16 steps of the logit itself (the logits
    are bfloat16 values: one step at 8.0 is 0.0625)."""
    vlm = minivlm.load(model_dir, dtype=torch.bfloat16)
    linears, attends = count_calls(monkeypatch, "linear"), count_calls(monkeypatch, "attend")
    norm_ropes = count_calls(monkeypatch, "norm_rope")  # 32-wide heads and up: the tiny model's, not the fixture's
    rms_norms = count_calls(monkeypatch, "rms_norm")  # both models' hidden states (64 and more wide)
    gates = count_calls(monkeypatch, "silu_gate")  # both models' MLPs and the connector's projector
    prompt_products = count_calls(monkeypatch, "linear_onednn")  # the prefill's: more rows than MAX_ROWS
    if model_dir == TINY_MODEL:
        image = open_image(TINY_MODEL / "example.png")
        cases = [(vlm.render_chat([{"role": "user", "content": q}], 1), [image])
                 for q in ("What color is the circle?", "How many shapes are there?")]
    else:
        cases = [(c["prompt"], case_images(c)) for c in CASES if c["name"] in ("text_only", "rgba_500x300")]
    for prompt, images in cases:
        linears.clear()
        attends.clear()
        norm_ropes.clear()
        rms_norms.clear()
        gates.clear()
        prompt_products.clear()
        monkeypatch.setattr(cpp_build, "ENABLED", True)
        fast = vlm.generate(prompt, images, max_new_tokens=8, stop_ids=[], return_logits=True)
        # 7 decoding steps x (qkv, out, up, down); 8 one-row LM heads; the prefill's last block, whose last row alone
        # is read (decoder.run_decoder's last_only): its out, up and down products, and its attention, on one row
        assert len(linears) == 7 * n_layers * 4 + 8 + 3
        assert len(attends) == (7 * n_layers + 1 if uses_attend else 0)
        assert len(norm_ropes) == (8 * n_layers * 2 if uses_attend else 0)  # (prefill + 7 steps) x (q, k)
        assert len(rms_norms) == 8 * (2 * n_layers + 1)  # (prefill + 7 steps) x (2 per layer + the final one)
        assert len(gates) >= 8 * n_layers  # (prefill + 7 steps) x layers, + the projector when there are images
        # every block's qkv, the others' out, up and down: 4 n - 3 (+ the connector's with images)
        assert len(prompt_products) >= (4 * n_layers - 3 if ONEDNN_BFLOAT16 else 0)
        monkeypatch.setattr(cpp_build, "ENABLED", False)
        plain = vlm.generate(prompt, images, max_new_tokens=8, stop_ids=[], return_logits=True)
        assert fast.token_ids == plain.token_ids
        torch.testing.assert_close(fast.step_logits, plain.step_logits, rtol=2 * BF16_STEP, atol=0.05)


def test_rows_side_by_side_by_vendor(tmp_path):
    """Four weight rows at a time on Intel CPUs, one on others and where /proc/cpuinfo cannot be read."""
    (tmp_path / "intel").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n")
    (tmp_path / "amd").write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n")
    assert decoder_kernels.rows_side_by_side(tmp_path / "intel") == 4
    assert decoder_kernels.rows_side_by_side(tmp_path / "amd") == 1
    assert decoder_kernels.rows_side_by_side(tmp_path / "missing") == 1


def test_gemv_refuses_other_row_counts(kernels):
    x, w = torch.ones(1, 32).bfloat16(), torch.ones(8, 32).bfloat16()
    with pytest.raises(RuntimeError, match="side_by_side is 1 or 4"):
        kernels.gemv_bf16(x, w, 2)
