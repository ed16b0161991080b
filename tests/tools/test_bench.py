"""bench.py smoke test: the command runs end to end on small models and prints its JSON line (not a timing test),
whose rooflines are consistent."""

import json
import sys

import pytest
import torch
from conftest import FIXTURE_DIR

from minivlm.formats.config_json import load_config
from minivlm.formats.weights import expected_shapes, unused_keys
from minivlm.tools import bench
from minivlm.tools.bench_official import official_inputs
from minivlm.tools.flops import prompt_flops

KEYS = {"vision_s", "ttft_s", "decode_tok_s", "bandwidth_gbps", "roofline_pct", "peak_rss_gb", "weight_gb",
        "matmul_tflops", "vision_flop", "ttft_flop", "vision_roofline_s", "ttft_roofline_s", "vision_roofline_pct",
        "ttft_roofline_pct"}


def assert_compute_roofline_consistent(result: dict, config_dir) -> None:
    """The compute roofline's keys agree with each other and with the FLOP counter, for this prompt."""
    flop = prompt_flops(load_config(config_dir), result["crops"], result["prompt_tokens"])
    assert result["ttft_flop"] == flop.ttft.total and result["vision_flop"] == flop.vision.total
    assert 0 < result["vision_flop"] < result["ttft_flop"]
    rate = result["matmul_tflops"] * 1e12
    assert result["ttft_roofline_s"] == pytest.approx(result["ttft_flop"] / rate)
    assert result["vision_roofline_s"] == pytest.approx(result["vision_flop"] / rate)
    assert result["ttft_roofline_pct"] == pytest.approx(100 * result["ttft_roofline_s"] / result["ttft_s"])
    assert result["vision_roofline_pct"] == pytest.approx(100 * result["vision_roofline_s"] / result["vision_s"])


def test_bench_on_a_checkpoint(capsys):
    result = bench.main(["--model", str(FIXTURE_DIR), "--image", "300x200", "--dtype", "float32", "--new-tokens", "4"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == result
    assert KEYS <= set(result) and all(result[k] > 0 for k in KEYS)
    assert result["prompt_tokens"] > 400 and result["new_tokens"] == 4
    assert_compute_roofline_consistent(result, FIXTURE_DIR)


def test_bench_random_init_small_config(capsys):
    """--random-init with --config: the fixture's (tiny) architecture with fresh random weights, in bfloat16."""
    result = bench.main(["--random-init", "--config", str(FIXTURE_DIR), "--image", "640x480", "--new-tokens", "3",
                         "--repeat", "2"])
    assert result["crops"] == 5 and result["dtype"] == "bfloat16" and result["repeat"] == 2
    assert KEYS <= set(result) and isinstance(result["cpu_kernels"], bool)
    assert_compute_roofline_consistent(result, FIXTURE_DIR)


def test_follow_up_reports_both_times_to_first_token(capsys):
    result = bench.main(["--model", str(FIXTURE_DIR), "--image", "640x480", "--dtype", "float32", "--new-tokens", "3",
                         "--follow-up"])
    assert result["follow_up_tokens"] == bench.FOLLOW_UP_TOKENS
    assert 0 < result["follow_up_ttft_s"] < result["first_ttft_s"]  # 16 tokens against ~850 and 5 crops
    assert "follow-up first token" in capsys.readouterr().out


def test_random_init_covers_every_used_tensor():
    cfg = load_config(FIXTURE_DIR)
    weights = bench.random_weights(cfg, torch.bfloat16, torch.device("cpu"))
    used = {k: s for k, s in expected_shapes(cfg).items() if k not in unused_keys(cfg)}
    assert {k: tuple(t.shape) for k, t in weights.items()} == used


def test_shipped_release_config_has_the_release_size():
    shapes = expected_shapes(load_config(bench.REAL_CONFIG))
    assert len(shapes) == 705 and sum(torch.Size(s).numel() for s in shapes.values()) == 2_481_141_616  # the release: 705 tensors, 2.48 B parameters


def test_official_needs_the_remote_code_and_transformers(tmp_path, monkeypatch):
    """--official fails at once, naming what is missing, before minutes of timing."""
    with pytest.raises(SystemExit, match="no modeling_jvlm.py and config.json there"):
        bench.main(["--random-init", "--official", str(tmp_path)])
    for name in ("modeling_jvlm.py", "config.json"):
        (tmp_path / name).write_text("")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(SystemExit, match="--official needs transformers"):
        bench.main(["--random-init", "--official", str(tmp_path)])
    with pytest.raises(SystemExit, match="on the CPU only"):
        bench.main(["--random-init", "--device", "cuda", "--official", str(tmp_path)])


def test_official_inputs_add_the_batch_axis():
    batch = bench.random_init_batch(load_config(FIXTURE_DIR), bench.synthetic_image(640, 480))
    inputs = official_inputs(batch)
    assert inputs["images"].shape == (1, *batch["images"].shape)
    assert inputs["image_input_idx"].shape == (1, *batch["image_input_idx"].shape)
    assert torch.equal(inputs["input_ids"], batch["input_ids"])
