"""Bad generation settings and devices through the Python API (vlm.py)."""

import math

import pytest
import torch
from conftest import FIXTURE_DIR

import minivlm
from minivlm.vlm import check_device


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
