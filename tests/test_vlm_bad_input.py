"""Bad generation settings and devices through the Python API (vlm.py)."""

import math

import pytest
import torch
from bad_input import RGB_378
from conftest import FIXTURE_DIR

import minivlm
from minivlm.core.decoder import KVCache
from minivlm.vlm import INITIAL_ANSWER_ROOM, check_device


@pytest.mark.parametrize("bad, message", [
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(temperature=-0.5), "temperature must be >= 0"),
    (dict(temperature=math.nan), "temperature must be a finite number"),
    (dict(temperature="0.7"), "temperature must be a finite number"),
    (dict(top_k=2.5), "top_k must be an integer"),
    (dict(max_new_tokens=1.5), "max_new_tokens must be a positive integer"),
])
def test_bad_generation_settings(vlm, bad, message):
    with pytest.raises(ValueError, match=message):
        vlm.generate("hi", **bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu():
    with pytest.raises(ValueError, match="'cuda': no CUDA GPU is available to this PyTorch; use 'cpu'"):
        minivlm.load(FIXTURE_DIR, device="cuda")


def test_devices_that_are_not_there():
    with pytest.raises(ValueError, match="'gpu' is not a PyTorch device"):
        check_device("gpu")
    with pytest.raises(ValueError, match="'cuda:99'"):
        check_device("cuda:99")
    assert check_device("cpu") == torch.device("cpu")


# -- generation arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (dict(seed=-1), "seed must be None or an integer from 0 to 2\\*\\*64 - 1, got -1"),
    (dict(seed=2**64), "seed must be None or an integer"),
    (dict(seed="1"), "seed must be None or an integer"),
    (dict(seed=1.5), "seed must be None or an integer"),
    (dict(seed=True), "seed must be None or an integer"),
    (dict(stop_ids=5), "stop_ids must be a list of token ids"),
    (dict(stop_ids="5"), "stop_ids must be a list of token ids"),
    (dict(stop_ids=[True]), "stop_ids must be non-negative integer token ids, got True"),
    (dict(stop_ids=[-1]), "stop_ids must be non-negative integer token ids, got -1"),
    (dict(stop_ids=[1.0]), "stop_ids must be non-negative integer token ids, got 1.0"),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
    (dict(max_new_tokens=True), "max_new_tokens must be a positive integer"),
    (dict(max_new_tokens="8"), "max_new_tokens must be a positive integer"),
])
def test_bad_generation_arguments(vlm, bad, message):
    with pytest.raises(ValueError, match=message):
        vlm.generate("hi", **bad)


def test_repetition_penalty_on_an_image_prompt(vlm):
    """The prompt's image layout tokens have ids past the LM head: the penalty must skip them."""
    out = vlm.generate("What is this?", [RGB_378], max_new_tokens=3, repetition_penalty=1.1, stop_ids=[])
    assert len(out.token_ids) == 3
    sampled = vlm.generate("What is this?", [RGB_378], max_new_tokens=2, temperature=1e-45, top_p=1e-300,
                           repetition_penalty=1.3, seed=0, stop_ids=[])
    assert len(sampled.token_ids) == 2


def test_huge_max_new_tokens_does_not_allocate_up_front(vlm, monkeypatch):
    """max_new_tokens up to the model's maximum is fine: the KV cache starts small and grows when used."""
    capacities = []
    real_empty = KVCache.empty.__func__
    monkeypatch.setattr(KVCache, "empty", classmethod(lambda cls, *a, **k: capacities.append(a[2]) or
                                                      real_empty(cls, *a, **k)))
    limit = vlm.cfg.text.max_sequence_length
    prompt_len = len(vlm.preprocess("hi")["input_ids"])
    out = vlm.generate("hi", max_new_tokens=limit - prompt_len, stop_ids=list(range(vlm.cfg.text.embedding_size)))
    assert len(out.token_ids) == 1  # every id stops it
    assert capacities == [prompt_len + INITIAL_ANSWER_ROOM]
    with pytest.raises(ValueError, match="exceeds the model's maximum sequence length of 40960; lower max_new_tokens"):
        vlm.generate("hi", max_new_tokens=limit - prompt_len + 1)
