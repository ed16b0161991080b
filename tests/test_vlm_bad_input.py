"""Bad generation settings and devices through the Python API (vlm.py)."""

import math

import pytest
import torch
from bad_input import RGB_378
from conftest import FIXTURE_DIR
from PIL import Image

import minivlm
from minivlm.core.decoder import KVCache
from minivlm.devices import check_device, check_dtype
from minivlm.vlm import INITIAL_ANSWER_ROOM


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


# -- misuse of the API: ValueErrors with one-line messages -----------------------------------------------------


def test_images_given_as_one_image_or_a_path(vlm):
    as_list = vlm.generate("What is this?", [RGB_378], max_new_tokens=2, stop_ids=[]).token_ids
    assert vlm.generate("What is this?", str(RGB_378), max_new_tokens=2, stop_ids=[]).token_ids == as_list
    assert vlm.generate("What is this?", RGB_378, max_new_tokens=2, stop_ids=[]).token_ids == as_list
    assert vlm.generate("What is this?", Image.open(RGB_378), max_new_tokens=2, stop_ids=[]).token_ids == as_list
    chat = vlm.chat([{"role": "user", "content": "What is this?"}], images=str(RGB_378), max_new_tokens=1)
    assert chat.prompt_tokens > 100  # the image is in


@pytest.mark.parametrize("call, message", [
    (lambda vlm: vlm.generate("hi", images=5), "images must be a list of images (paths, PIL images or uint8"),
    (lambda vlm: vlm.generate("hi", images=b"\x89PNG"), "images must be a list of images"),
    (lambda vlm: vlm.generate("hi", images=[5]),
     "expected an image path, a PIL image or a uint8 [H, W, 3] array, got int"),
    (lambda vlm: vlm.logits("What is this?"), "logits takes a sample from vlm.preprocess(text, images), got str"),
    (lambda vlm: vlm.logits(None), "logits takes a sample from vlm.preprocess(text, images), got NoneType"),
    (lambda vlm: vlm.generate_batch([], []), "generate_batch needs at least one prompt, got an empty list"),
    (lambda vlm: vlm.generate_batch("hi", [[]]), "texts must be a list of prompts, got str"),
    (lambda vlm: vlm.generate_batch(["a", "b"], [[]]), "2 prompts but 1 image lists"),
    (lambda vlm: vlm.generate(None), "the prompt must be a str, got NoneType"),
    (lambda vlm: vlm.generate(b"bytes"), "the prompt must be a str, got bytes"),
    (lambda vlm: vlm.chat("a string"), "messages must be a list of {'role': ..., 'content': ...} dicts, got str"),
])
def test_api_misuse(vlm, call, message):
    with pytest.raises(ValueError) as err:
        call(vlm)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.int64, torch.complex64])
def test_load_refuses_a_dtype_that_is_not_floating(dtype):
    with pytest.raises(ValueError, match="dtype must be a floating-point torch dtype"):
        minivlm.load(FIXTURE_DIR, dtype=dtype)
    assert check_dtype(torch.bfloat16) == torch.bfloat16


@pytest.mark.parametrize("device, message", [
    ("meta", "device 'meta': minivlm runs on cpu, cuda, mps"),
    ("xla", "minivlm runs on cpu, cuda, mps"),
    (None, "device must be a string such as 'cpu', 'cuda', 'cuda:1' or 'mps', got None"),
    (3, "device must be a string"),
    ("cuda:x", "device 'cuda:x' is not a PyTorch device"),
])
def test_devices_minivlm_does_not_run_on(device, message):
    with pytest.raises(ValueError) as err:
        minivlm.load(FIXTURE_DIR, device=device)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1
