"""Sampling settings at their extremes, and ids the LM head has no row for (core/sampler.py)."""

import pytest
import torch

from minivlm.core.sampler import SamplingSettings, filter_top_k_top_p, next_token, penalize_repeats


def test_repetition_penalty_skips_ids_past_the_head():
    """The image layout tokens of a prompt (ids >= the head's rows) are in `seen`: they are ignored."""
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = penalize_repeats(logits, torch.tensor([[0, 1, 3, 700]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]
    assert torch.equal(out, penalize_repeats(logits, torch.tensor([[0, 1]]), 2.0))


def test_repetition_penalty_equals_the_gather_scatter_form():
    """The mask form gives exactly what Hugging Face's gather/scatter gives for ids inside the head."""
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    seen = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(1))
    picked = logits.gather(-1, seen)
    expected = logits.scatter(-1, seen, torch.where(picked > 0, picked / 1.3, picked * 1.3))
    assert torch.equal(penalize_repeats(logits, seen, 1.3), expected)


@pytest.mark.parametrize("temperature", [1e-45, 1e-300, 5e-324])
def test_tiny_temperature_keeps_the_most_likely_token(temperature):
    logits = torch.tensor([[3.0, 5.0, -1.0, 0.0], [-7.0, -9.0, -8.0, -20.0]])
    settings = SamplingSettings(temperature=temperature)
    for seed in range(5):
        token = next_token(logits, settings, generator=torch.Generator().manual_seed(seed))
        assert token.tolist() == [1, 0]


def test_tiny_top_p_keeps_the_most_likely_token():
    logits = torch.tensor([[0.1, 4.0, 0.2]])
    assert torch.isinf(filter_top_k_top_p(logits, 0, 1e-300)).tolist() == [[True, False, True]]
    token = next_token(logits, SamplingSettings(temperature=1.0, top_p=1e-300), generator=torch.Generator())
    assert token.item() == 1


def test_ordinary_temperature_is_unchanged():
    logits = torch.randn(2, 30, generator=torch.Generator().manual_seed(0))
    settings = SamplingSettings(temperature=0.7, top_k=10, top_p=0.9)
    a = next_token(logits, settings, generator=torch.Generator().manual_seed(3))
    expected = torch.multinomial(filter_top_k_top_p(logits / 0.7, 10, 0.9).softmax(-1), 1,
                                 generator=torch.Generator().manual_seed(3)).squeeze(-1)
    assert torch.equal(a, expected)
