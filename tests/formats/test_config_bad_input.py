"""Config files with sizes no model has, NaN, and values of the wrong shape (formats/config_json.py)."""

import json
import os
import time

import pytest
from bad_input import checkpoint
from conftest import FIXTURE_DIR

import minivlm
from minivlm.formats.config_json import ConfigError, generation_stop_ids, load_config


def set_key(path: list[str], value):
    """An edit for `checkpoint`: data[path[0]]...[path[-1]] = value."""
    def edit(data):
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    return edit


@pytest.mark.parametrize("file, path, value, message", [
    ("config.json", ["text_config", "n_layers"], 10**9,
     "text_config.n_layers = 1000000000 is beyond any real model (at most 1,024)"),
    ("config.json", ["vision_config", "n_layers"], 10**6, "vision_config.n_layers = 1000000 is beyond any real model"),
    ("config.json", ["text_config", "hidden_size"], 2**40, "text_config.hidden_size = 1099511627776 is beyond"),
    ("config.json", ["text_config", "vocab_size"], 10**12, "text_config.vocab_size = 1000000000000 is beyond"),
    ("config.json", ["text_config", "max_sequence_length"], 2**40, "max_sequence_length = 1099511627776 is beyond"),
    ("config.json", ["text_config", "block_config", "ffn_config", "size"], 10**9, "ffn_config.size = 1000000000"),
    ("config.json", ["vision_config", "input_size"], [10**6, 10**6], "input_size = 1000000 is beyond any real model"),
    ("config.json", ["vision_config", "input_size"], [1.5, 1.5], "input_size = [1.5, 1.5]: square crops [n, n]"),
    ("config.json", ["vision_config", "input_size"], [100, 100], "input_size = [100, 100]: not a whole number of 14"),
    ("config.json", ["vision_config", "vit_layers"], [True], "vit_layers should be a non-empty list of integers"),
    ("config.json", ["text_config", "rope_theta"], 1e300, "text_config.rope_theta = 1e+300 is beyond any real model"),
    ("config.json", ["text_config", "block_config", "lnorm_config", "eps"], 5.0, "lnorm_config.eps = 5.0 is beyond"),
    ("preprocessor_config.json", ["max_crops"], 10**9,
     "max_crops = 1000000000 is beyond any real model (at most 1,024)"),
    ("preprocessor_config.json", ["max_pixels"], 10**12, "max_pixels = 1000000000000 is beyond any real model"),
    ("preprocessor_config.json", ["min_pixels"], 2_000_000, "min_pixels = 2000000 is above max_pixels = 1003520"),
    ("preprocessor_config.json", ["overlap_margins"], [True, 4], "overlap_margins = [True, 4]: two non-negative"),
    ("preprocessor_config.json", ["overlap_margins"], [20, 20], "the margins leave nothing of a crop's 27 patches"),
    ("processor_config.json", ["always_start_with_space"], "false",
     "processor_config.json: always_start_with_space should be true or false, found 'false'"),
])
def test_values_no_model_has(tmp_path, file, path, value, message):
    root = checkpoint(tmp_path, {file: set_key(path, value)})
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(root)
    assert message in str(err.value) and file in str(err.value) and len(str(err.value).splitlines()) == 1
    assert time.perf_counter() - start < 1  # refused on reading, before anything is enumerated


@pytest.mark.parametrize("text, message", [
    ('{"x": NaN}', "NaN is not a number JSON allows"),
    ('{"x": Infinity}', "Infinity is not a number JSON allows"),
    ('{"x": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"x": 1e999}', "1e999 overflows a float"),
    ('{"x": ' + "9" * 5000 + "}", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[1, 2]", "should hold a JSON object, found list"),
])
def test_json_that_is_not_a_config(tmp_path, text, message):
    root = checkpoint(tmp_path)
    (root / "preprocessor_config.json").write_text(text)
    with pytest.raises(ConfigError, match="preprocessor_config.json") as err:
        load_config(root)
    assert message in str(err.value)


def test_nan_eps_refused(tmp_path):
    text = (FIXTURE_DIR / "config.json").read_text().replace('"eps": 1e-06', '"eps": NaN', 1)
    root = checkpoint(tmp_path)
    (root / "config.json").write_text(text)
    with pytest.raises(ConfigError, match="config.json is not valid JSON: NaN is not a number JSON allows"):
        minivlm.load(root)


@pytest.mark.parametrize("eos, message", [
    (True, "eos_token_id should be an id or a list of ids (non-negative integers)"),
    ([1, False], "found [1, False]"),
    ([-1], "found [-1]"),
    ("<|im_end|>", "found '<|im_end|>'"),
])
def test_generation_config_eos_ids(tmp_path, eos, message):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    with pytest.raises(ConfigError) as err:
        generation_stop_ids(tmp_path, 5)
    assert "generation_config.json: eos_token_id" in str(err.value) and message in str(err.value)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 4]}))
    assert generation_stop_ids(tmp_path, 5) == [3, 4]


def test_a_fifo_or_folder_in_place_of_a_config(tmp_path):
    root = checkpoint(tmp_path)
    (root / "preprocessor_config.json").unlink()
    (root / "preprocessor_config.json").mkdir()
    with pytest.raises(ConfigError, match="preprocessor_config.json: a folder, not a file"):
        load_config(root)
    (root / "preprocessor_config.json").rmdir()
    os.mkfifo(root / "preprocessor_config.json")
    with pytest.raises(ConfigError, match=r"preprocessor_config.json: a FIFO \(named pipe\), not a regular file"):
        load_config(root)  # reading it would block forever
