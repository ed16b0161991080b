"""Bad checkpoints: shards, truncated files, NaN, other architectures, tokenizers (formats/*.py)."""

import json
import os

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


# -- tensors of the wrong type, indexes of the wrong shape, files that are not files ---------------------------


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.int64, torch.uint8])
def test_tensors_that_are_not_floats(tmp_path, dtype):
    root = checkpoint(tmp_path)
    tensors = load_file(root / "model.safetensors")
    key = "model.language_model.ln_f.weight"
    tensors[key] = tensors[key].to(dtype)
    save_file(tensors, root / "model.safetensors")
    with pytest.raises(WeightsError, match=f"tensors stored as a type that is not a float: {key} "):
        load_weights(root, CFG)


def write_index(root, weight_map):
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("weight_map, message", [
    (["model-00001-of-00002.safetensors"],
     "weight_map should be an object {tensor name: shard file name}, found a list"),
    ({"a": 5}, "found an object with non-string entries"),
    (None, "found none"),
    ({"a": "../outside.safetensors"}, "names the shard '../outside.safetensors', outside the checkpoint folder"),
    ({"a": "/etc/passwd"}, "names the shard '/etc/passwd', outside the checkpoint folder"),
])
def test_index_of_the_wrong_shape_or_pointing_outside(tmp_path, weight_map, message):
    root = checkpoint(tmp_path)
    split_into_shards(root)
    write_index(root, weight_map)
    with pytest.raises(WeightsError, match="model.safetensors.index.json: ") as err:
        load_weights(root, CFG)
    assert message in str(err.value)


def test_index_with_nan_is_refused(tmp_path):
    root = checkpoint(tmp_path)
    split_into_shards(root)
    (root / "model.safetensors.index.json").write_text('{"metadata": {"total_size": NaN}, "weight_map": {}}')
    with pytest.raises(WeightsError, match="index.json is not valid JSON: NaN"):
        load_weights(root, CFG)


def test_fifo_folder_and_device_in_place_of_weights(tmp_path, monkeypatch):
    root = checkpoint(tmp_path)
    (root / "model.safetensors").unlink()
    os.mkfifo(root / "model.safetensors")
    with pytest.raises(WeightsError, match=r"model.safetensors: a FIFO \(named pipe\), not a regular file; a weights"):
        load_weights(root, CFG)
    (root / "model.safetensors").unlink()
    (root / "model.safetensors").mkdir()
    with pytest.raises(WeightsError, match="model.safetensors: a folder, not a file"):
        load_weights(root, CFG)
    (root / "model.safetensors").rmdir()
    (root / "model.safetensors").symlink_to("/dev/zero")
    with pytest.raises(WeightsError, match="model.safetensors: a device file, not a regular file"):
        load_weights(root, CFG)


def test_unreadable_weights_say_permission_not_redownload(tmp_path, monkeypatch):
    root = checkpoint(tmp_path)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # tests may run as root, who reads anything
    with pytest.raises(WeightsError, match="model.safetensors: permission denied; make the file readable") as err:
        load_weights(root, CFG)
    assert "re-download" not in str(err.value)


@pytest.mark.parametrize("file, content, message", [
    ("tokenizer_config.json", [1, 2], "tokenizer_config.json should hold a JSON object, found list"),
    ("tokenizer_config.json", {"eos_token": 5}, "tokenizer_config.json: eos_token should be a token string"),
    ("tokenizer_config.json", {"bos_token": {"content": 7}}, "tokenizer_config.json: bos_token should be a token"),
    ("special_tokens_map.json", {"eos_token": ["<|endoftext|>"]}, "special_tokens_map.json: eos_token should be"),
])
def test_tokenizer_config_of_the_wrong_shape(tmp_path, file, content, message):
    root = checkpoint(tmp_path)
    if file == "special_tokens_map.json":  # tokenizer_config.json's entry would win: leave only this one
        config = json.loads((root / "tokenizer_config.json").read_text())
        config.pop("eos_token", None)
        (root / "tokenizer_config.json").write_text(json.dumps(config))
    (root / file).write_text(json.dumps(content))
    with pytest.raises(TokenizerError) as err:
        Tokenizer(root)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_tokenizer_file_that_is_a_fifo(tmp_path):
    root = checkpoint(tmp_path)
    (root / "tokenizer.json").unlink()
    os.mkfifo(root / "tokenizer.json")
    with pytest.raises(TokenizerError, match=r"tokenizer.json: a FIFO \(named pipe\), not a regular file"):
        Tokenizer(root)
