"""sampler.py: logits -> the next token (filters, penalty, settings) and UTF-8-safe streaming."""

import pytest
import torch

from minivlm.core.sampler import (
    SamplingSettings,
    TextStream,
    filter_top_k_top_p,
    next_token,
    penalize_repeats,
)


def test_top_k_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_top_k_top_p(logits, 2, 1.0)).tolist() == [[False, False, True, True]]
    # top_p 0.7: 0.5 alone is not enough, 0.5 + 0.3 is -> keep two
    assert torch.isinf(filter_top_k_top_p(logits, 0, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_top_k_top_p(logits, 0, 0.5)).tolist() == [[False, True, True, True]]


def test_repetition_penalty():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = penalize_repeats(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]
    assert next_token(logits, SamplingSettings(repetition_penalty=4.0), torch.tensor([[0]])).item() == 2


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1)])
def test_bad_sampling_settings(bad):
    with pytest.raises(ValueError):
        SamplingSettings(**bad)


def test_stream_never_splits_a_utf8_character(vlm):
    tok = vlm.tokenizer
    text = "猫 on a 椅子"
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some characters really are split across tokens
    stream = TextStream(tok.decode)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_greedy_is_the_argmax_whatever_the_other_settings():
    logits = torch.tensor([[0.1, 3.0, -1.0], [2.0, 0.0, 1.9]])
    assert next_token(logits, SamplingSettings(top_k=1, top_p=0.1)).tolist() == [1, 0]


def test_top_k_keeps_exactly_k():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    kept = torch.isfinite(filter_top_k_top_p(logits, 7, 1.0))
    assert kept.sum(-1).tolist() == [7, 7, 7]
    assert torch.equal(kept, logits >= logits.topk(7, dim=-1).values[:, -1:])
