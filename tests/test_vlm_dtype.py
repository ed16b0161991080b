"""load(dtype=...): "auto" (the default), names, torch dtypes; auto = the stored dtype where the device runs it
natively, else float32."""

import shutil

import pytest
import torch
from conftest import FIXTURE_DIR
from safetensors.torch import load_file, save_file

import minivlm
from minivlm.devices import choose_dtype

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16")
    for f in FIXTURE_DIR.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, folder / f.name)
    weights = {k: v.to(torch.bfloat16) for k, v in load_file(FIXTURE_DIR / "model.safetensors").items()}
    save_file(weights, folder / "model.safetensors")
    return folder


def test_names_and_dtypes():
    assert choose_dtype("bfloat16", FIXTURE_DIR, CPU)[0] == torch.bfloat16
    assert choose_dtype(torch.float32, FIXTURE_DIR, CPU) == (torch.float32, "asked for")
    with pytest.raises(ValueError, match="dtype 'bf16' is not one minivlm runs in; use 'auto'"):
        choose_dtype("bf16", FIXTURE_DIR, CPU)


def test_auto_keeps_a_float32_checkpoint_in_float32(vlm):
    assert choose_dtype("auto", FIXTURE_DIR, CPU)[0] == torch.float32
    assert vlm.dtype == torch.float32  # conftest's minivlm.load(FIXTURE_DIR): the default is auto


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, torch.bfloat16), (False, True, torch.bfloat16),
                                                        (False, False, torch.float32)])
def test_auto_on_a_bfloat16_checkpoint_follows_the_cpu(bf16_checkpoint, monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    dtype, why = choose_dtype("auto", bf16_checkpoint, CPU)
    assert dtype == expected and why.startswith("auto: the checkpoint")


def test_load_accepts_a_name(bf16_checkpoint, monkeypatch):
    # the kernels are not tested here
    monkeypatch.setattr(minivlm.vlm.accel, "install_for", lambda device, dtype, compile=False: None)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert minivlm.load(bf16_checkpoint).dtype == torch.float32
    vlm = minivlm.load(bf16_checkpoint, dtype="bfloat16")
    assert vlm.dtype == torch.bfloat16 and vlm.weights["lm_head.weight"].dtype == torch.bfloat16
