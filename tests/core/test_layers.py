"""layers.py: the shared primitives against textbook formulas, the grouped-query decode branch, and the hooks."""

import pytest
import torch

from minivlm.core import layers
from minivlm.core.layers import attention, linear, rms_norm, swiglu


def reference_attention(q, k, v, mask=None):
    """softmax(q kᵀ / √d) v in float64, each query head reading kv head h // (Hq / Hkv)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1).double(), v.repeat_interleave(group, 1).double()
    scores = q.double() @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (8, 2), (6, 1)])
@pytest.mark.parametrize("q_len", [1, 5])
def test_grouped_query_attention(n_heads, n_kv_heads, q_len):
    """q_len 1 is the decoding branch (query heads folded onto their kv head, no copy of the cache)."""
    g = torch.Generator().manual_seed(n_heads * 10 + q_len)
    q = torch.randn(2, n_heads, q_len, 16, generator=g)
    k, v = torch.randn(2, n_kv_heads, 9, 16, generator=g), torch.randn(2, n_kv_heads, 9, 16, generator=g)
    torch.testing.assert_close(attention(q, k, v).double(), reference_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_decode_branch_with_a_padding_mask():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 4, 1, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g)
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[1, ..., :3] = False  # row 1 is left-padded by three positions
    torch.testing.assert_close(attention(q, k, v, mask).double(), reference_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_causal_prefill():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 4, 5, 8, generator=g) for _ in range(3))
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    expected = reference_attention(q, k[:, :4], v[:, :4], causal)  # 4 query heads over the first 4 as kv heads
    torch.testing.assert_close(attention(q, k[:, :4], v[:, :4], causal=True).double(), expected, rtol=1e-5, atol=1e-5)


def test_rms_norm_rounds_before_the_weight():
    """In bfloat16 the statistics run in float32, the normalised value is rounded once, then multiplied."""
    x, weight = torch.randn(3, 64).bfloat16(), torch.randn(64).bfloat16()
    x32 = x.float()
    expected = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16() * weight
    assert torch.equal(rms_norm(x, weight, 1e-6), expected)


def test_swiglu_value_rows_come_first():
    x, up, down = torch.randn(2, 8), torch.randn(12, 8), torch.randn(8, 6)
    value, gate = (x @ up.T).chunk(2, -1)
    torch.testing.assert_close(swiglu(x, up, down), (torch.nn.functional.silu(gate) * value) @ down.T)


def test_hooks_answer_or_pass(monkeypatch):
    """A hook's result is used; None means "not mine" and the plain op runs."""
    x, w = torch.randn(2, 4), torch.randn(3, 4)
    monkeypatch.setattr(layers.hooks, "linear", lambda x, weight, bias: None)
    torch.testing.assert_close(linear(x, w), x @ w.T)
    monkeypatch.setattr(layers.hooks, "linear", lambda x, weight, bias: torch.zeros(2, 3))
    assert torch.equal(linear(x, w), torch.zeros(2, 3))
