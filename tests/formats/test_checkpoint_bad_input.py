"""Bad checkpoints: shards, truncated files, NaN, other architectures, tokenizers (formats/*.py)."""

import json

import pytest
import torch
from bad_input import CFG, checkpoint, split_into_shards, without_image_tokens
from safetensors.torch import load_file, save_file

import minivlm
from minivlm.formats.config_json import ConfigError, load_config
from minivlm.formats.tokenizer import Tokenizer, TokenizerError
from minivlm.formats.weights import WeightsError, load_weights


def test_shards_without_their_index(tmp_path):
    root = checkpoint(tmp_path)
    split_into_shards(root, keep_index=False)
    with pytest.raises(WeightsError, match="found model-00001-of-00002.safetensors, .* but no index"):
        load_weights(root, CFG)


def test_index_names_a_tensor_its_file_lacks(tmp_path):
    root = checkpoint(tmp_path)
    first, _ = split_into_shards(root)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    last = max(index["weight_map"])  # it is in the second shard
    index["weight_map"][last] = first.name
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match=f"index says it holds {last}, but it does not"):
        load_weights(root, CFG)


def test_half_copied_safetensors(tmp_path):
    root = checkpoint(tmp_path)
    data = (root / "model.safetensors").read_bytes()
    (root / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file .*re-download it"):
        load_weights(root, CFG)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_inf_and_nan_found_when_asked(tmp_path, bad):
    root = checkpoint(tmp_path)
    tensors = load_file(root / "model.safetensors")
    tensors["model.vision_model.layers.0.attn.out.weight"][1, 2] = bad
    save_file(tensors, root / "model.safetensors")
    with pytest.raises(WeightsError, match="layers.0.attn.out.weight contains NaN or Inf"):
        load_weights(root, CFG, dtype=torch.bfloat16, check_finite=True)


def test_another_models_checkpoint(tmp_path):
    root = checkpoint(tmp_path, {"config.json": lambda c: c.update(model_type="llama")})
    with pytest.raises(ConfigError, match="model_type = 'llama' is not supported by minivlm"):
        load_config(root)
    tensors = {"model.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)}
    save_file(tensors, root / "model.safetensors")
    with pytest.raises(WeightsError, match="none of the expected tensors is there") as err:
        load_weights(root, CFG)
    assert "... and 173 more" in str(err.value)  # 193 problems, 20 listed


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="is not a checkpoint folder: it has no config.json"):
        minivlm.load(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        load_config(tmp_path)


def test_tokenizer_without_image_tokens(tmp_path):
    root = checkpoint(tmp_path, {"tokenizer.json": without_image_tokens})
    with pytest.raises(TokenizerError, match="tokenizer.json has no single token '<im_start>'"):
        Tokenizer(root)
