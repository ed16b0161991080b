"""weights.py: lazy safetensors loading, every key and shape checked before anything runs."""

import json
import shutil

import pytest
import torch
from conftest import FIXTURE_DIR
from safetensors.torch import load_file, save_file

from minivlm.formats.config_json import load_config
from minivlm.formats.weights import (
    WeightsError,
    expected_shapes,
    load_weights,
    unused_keys,
)

CFG = load_config(FIXTURE_DIR)


def checkpoint_with(tmp_path, tensors):
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(FIXTURE_DIR / name, tmp_path / name)
    save_file(tensors, tmp_path / "model.safetensors")
    return tmp_path


def test_expected_shapes_cover_the_checkpoint_exactly():
    stored = load_file(FIXTURE_DIR / "model.safetensors")
    assert {k: tuple(v.shape) for k, v in stored.items()} == expected_shapes(CFG)
    assert len(stored) == 192  # the fixture checkpoint holds 192 tensors


def test_load_skips_dead_tensors_and_casts():
    weights = load_weights(FIXTURE_DIR, CFG, dtype=torch.bfloat16)
    assert "model.vision_model.post_lnorm.weight" not in weights
    assert "model.vision_model.layers.8.attn.qkv_w.weight" not in weights  # blocks 8, 9 follow the deepest used (7)
    assert "model.vision_model.layers.7.attn.qkv_w.weight" in weights
    assert len(weights) == 192 - len(unused_keys(CFG))
    assert all(t.dtype == torch.bfloat16 for t in weights.values())


def test_damaged_checkpoint_lists_every_problem(tmp_path):
    tensors = load_file(FIXTURE_DIR / "model.safetensors")
    del tensors["model.language_model.layers.1.attn.q_b"]
    tensors["model.language_model.layers.1.attn.extra"] = torch.zeros(3)
    tensors["lm_head.weight"] = torch.zeros(500, 64)
    with pytest.raises(WeightsError) as err:
        load_weights(checkpoint_with(tmp_path, tensors), CFG)
    message = str(err.value)
    assert "3 problems" in message
    assert "missing     model.language_model.layers.1.attn.q_b  expected [64]" in message
    assert "unexpected  model.language_model.layers.1.attn.extra  found [3]" in message
    assert "wrong shape lm_head.weight  expected [512, 64], found [500, 64]" in message


def test_sharded_checkpoint(tmp_path):
    tensors = load_file(FIXTURE_DIR / "model.safetensors")
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[:100], "model-00002-of-00002.safetensors": keys[100:]}
    for name, part in shards.items():
        save_file({k: tensors[k] for k in part}, tmp_path / name)
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(FIXTURE_DIR / name, tmp_path / name)
    weights = load_weights(tmp_path, CFG)
    assert torch.equal(weights["lm_head.weight"], tensors["lm_head.weight"])

    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightsError, match="names shard files that are not there: .*model-00002-of-00002"):
        load_weights(tmp_path, CFG)


def test_nan_found_when_asked(tmp_path):
    tensors = load_file(FIXTURE_DIR / "model.safetensors")
    tensors["model.language_model.ln_f.weight"][3] = float("nan")
    path = checkpoint_with(tmp_path, tensors)
    load_weights(path, CFG)  # not checked by default (it reads every tensor)
    with pytest.raises(WeightsError, match="ln_f.weight contains NaN or Inf"):
        load_weights(path, CFG, check_finite=True)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(WeightsError, match="pickle checkpoints are never loaded"):
        load_weights(tmp_path, CFG)
