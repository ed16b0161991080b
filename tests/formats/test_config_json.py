"""config.py: the official nested config.json read into dataclasses; unsupported values refused by name."""

import json
import shutil

import pytest
from conftest import FIXTURE_DIR

from minivlm.formats.config_json import ConfigError, load_config


def test_fixture_config_values():
    cfg = load_config(FIXTURE_DIR)
    assert (cfg.vision.hidden_size, cfg.vision.n_layers, cfg.vision.n_heads, cfg.vision.head_dim) == (32, 10, 4, 8)
    assert cfg.vision.vit_layers == (-4, -10)
    assert cfg.vision.selected_blocks == (7, 1)  # cases.json vit_layer_probe: the raw outputs of blocks 7 and 1
    assert cfg.vision.pooled_per_crop == 196
    assert (cfg.text.hidden_size, cfg.text.n_heads, cfg.text.n_kv_heads, cfg.text.head_dim) == (64, 4, 2, 16)
    assert (cfg.text.embedding_size, cfg.text.additional_vocab_size) == (512, 128)
    assert cfg.preprocessor.max_crops == 12 and cfg.always_start_with_space


def edited_checkpoint(tmp_path, file, edit):
    """A copy of the fixture's config files with `edit(dict)` applied to one of them."""
    for name in ("config.json", "preprocessor_config.json", "processor_config.json"):
        shutil.copy(FIXTURE_DIR / name, tmp_path / name)
    data = json.loads((tmp_path / file).read_text())
    edit(data)
    (tmp_path / file).write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize("file, path, value, message", [
    ("config.json", ["vision_config", "vl_connector_config", "pooling_type"], "attention_2wide",
     "vision_config.vl_connector_config.pooling_type = 'attention_2wide' is not supported"),
    ("config.json", ["vision_config", "use_cls_token"], True, "vision_config.use_cls_token = True"),
    ("config.json", ["vision_config", "block_config", "ffn_config", "activation_type"], "relu",
     "activation_type = 'relu' is not supported by minivlm (supported: 'gelu_pytorch_tanh')"),
    ("config.json", ["text_config", "block_config", "lnorm_config", "type"], "default",
     "text_config.block_config.lnorm_config.type = 'default'"),
    ("config.json", ["text_config", "rope_scaling"], {"type": "yarn"}, "text_config.rope_scaling"),
    ("preprocessor_config.json", ["cropping_method"], "resize", "cropping_method = 'resize' is not supported by minivlm"),
    ("preprocessor_config.json", ["normalization_method"], "gaussian", "normalization_method = 'gaussian'"),
])
def test_unsupported_value_is_named(tmp_path, file, path, value, message):
    def edit(data):
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(edited_checkpoint(tmp_path, file, edit))


def test_missing_key_is_an_error_not_a_default(tmp_path):
    def edit(data):
        del data["text_config"]["block_config"]["lnorm_config"]["eps"]
    with pytest.raises(ConfigError, match=r"text_config.block_config.lnorm_config.eps is missing"):
        load_config(edited_checkpoint(tmp_path, "config.json", edit))


def test_vit_layer_out_of_range(tmp_path):
    def edit(data):
        data["vision_config"]["vit_layers"] = [-4, -30]
    with pytest.raises(ConfigError, match=r"vit_layers.*index -30"):
        load_config(edited_checkpoint(tmp_path, "config.json", edit))


def test_width_mismatch(tmp_path):
    def edit(data):
        data["vision_config"]["output_size"] = 128
    with pytest.raises(ConfigError, match="output_size 128 must equal text_config.hidden_size 64"):
        load_config(edited_checkpoint(tmp_path, "config.json", edit))
