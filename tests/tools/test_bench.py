"""bench.py smoke test: the command runs end to end on small models and prints its JSON line (not a timing test),
whose rooflines are consistent."""

import json
import statistics
import sys
from importlib import metadata

import pytest
import torch
from conftest import FIXTURE_DIR

from minivlm.formats.config_json import load_config
from minivlm.formats.weights import expected_shapes, unused_keys
from minivlm.tools import bench, probes
from minivlm.tools.bench_official import check_official_dir, official_inputs
from minivlm.tools.flops import Product, prompt_flops

KEYS = {"vision_s", "ttft_s", "decode_tok_s", "bandwidth_gbps", "roofline_pct", "peak_rss_gb", "weight_gb",
        "matmul_tflops", "vision_flop", "ttft_flop", "vision_roofline_s", "ttft_roofline_s", "vision_roofline_pct",
        "ttft_roofline_pct", "decode_probe_gbps", "roofline_pct_around", "matmul_burst_tflops", "vision_products_s",
        "ttft_products_s", "vision_products_pct", "ttft_products_pct", "vision_floor_s", "ttft_floor_s",
        "kv_bytes_per_token_gb"}


def assert_compute_roofline_consistent(result: dict, config_dir) -> None:
    """The compute roofline's keys agree with each other and with the FLOP counter, for this prompt."""
    flop = prompt_flops(load_config(config_dir), result["crops"], result["prompt_tokens"])
    assert result["ttft_flop"] == flop.ttft.total and result["vision_flop"] == flop.vision.total
    assert 0 < result["vision_flop"] < result["ttft_flop"]
    rate = result["matmul_tflops"] * 1e12
    assert 0 < result["matmul_tflops"] <= result["matmul_burst_tflops"]  # sustained over 2 s <= one product at best
    assert result["ttft_roofline_s"] == pytest.approx(result["ttft_flop"] / rate)
    assert result["vision_roofline_s"] == pytest.approx(result["vision_flop"] / rate)
    assert result["ttft_roofline_pct"] == pytest.approx(100 * result["ttft_roofline_s"] / result["ttft_s"])
    assert result["vision_roofline_pct"] == pytest.approx(100 * result["vision_roofline_s"] / result["vision_s"])
    assert 0 < result["vision_products_s"] < result["ttft_products_s"]  # the prefill's products come on top
    assert result["ttft_products_pct"] == pytest.approx(100 * result["ttft_products_s"] / result["ttft_s"])
    # the floor: the products' time scaled by all the arithmetic over the products' arithmetic
    assert result["ttft_floor_s"] == pytest.approx(result["ttft_products_s"] * flop.ttft.total / flop.ttft.matmul)
    assert result["vision_products_s"] < result["vision_floor_s"] and result["ttft_products_s"] < result["ttft_floor_s"]


def test_bench_on_a_checkpoint(capsys):
    result = bench.main(["--model", str(FIXTURE_DIR), "--image", "300x200", "--dtype", "float32", "--new-tokens", "4"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == result
    assert KEYS <= set(result) and all(result[k] > 0 for k in KEYS)
    assert result["prompt_tokens"] > 400 and result["new_tokens"] == 4 and result["vit_blocks"] == "plain"  # float32
    assert result["attention"] == "sdpa"
    assert_compute_roofline_consistent(result, FIXTURE_DIR)
    # one run: the decode's share of the bandwidth read around it, by the same bytes-per-token arithmetic
    assert result["roofline_pct_around"] == pytest.approx(
        100 * result["decode_tok_s"] * result["bytes_per_token_gb"] / result["decode_probe_gbps"])
    assert_decode_bytes_are_weights_and_kv_cache(result, FIXTURE_DIR, itemsize=4)


def assert_decode_bytes_are_weights_and_kv_cache(result: dict, config_dir, itemsize: int) -> None:
    """Bytes per decoded token, from the config alone: the decoder's weights (blocks, final norm, LM head) and its
    KV cache, keys and values of every layer over the positions attended to, tokens + 1 .. tokens + N - 1 for
    the N - 1 decode steps (mean tokens + N / 2)."""
    cfg = load_config(config_dir)
    decoder = sum(torch.Size(shape).numel() for key, shape in expected_shapes(cfg).items()
                  if key.startswith("model.language_model.layers.")
                  or key in ("model.language_model.ln_f.weight", "lm_head.weight")) * itemsize
    steps = range(1, result["new_tokens"])
    kv = sum(2 * cfg.text.n_layers * cfg.text.n_kv_heads * cfg.text.head_dim * itemsize
             * (result["prompt_tokens"] + k) for k in steps) / len(steps)
    assert result["kv_bytes_per_token_gb"] == pytest.approx(kv / 1e9)
    assert result["bytes_per_token_gb"] == pytest.approx((decoder + kv) / 1e9)
    assert result["roofline_tok_s"] == pytest.approx(result["bandwidth_gbps"] / result["bytes_per_token_gb"])


def test_bench_random_init_small_config(capsys):
    """--random-init with --config: the fixture's (tiny) architecture with fresh random weights, in bfloat16; with
    --breakdown."""
    result = bench.main(["--random-init", "--config", str(FIXTURE_DIR), "--image", "640x480", "--new-tokens", "3",
                         "--repeat", "2", "--breakdown"])
    assert result["crops"] == 5 and result["dtype"] == "bfloat16" and result["repeat"] == 2
    assert KEYS <= set(result) and isinstance(result["cpu_kernels"], bool)
    assert_compute_roofline_consistent(result, FIXTURE_DIR)
    assert_decode_bytes_are_weights_and_kv_cache(result, FIXTURE_DIR, itemsize=2)
    # every timed run is reported, and the headline numbers are their medians
    assert [set(run) for run in result["runs"]] == [set(bench.TIMED)] * 2
    for key in bench.TIMED:
        assert result[key] == pytest.approx(statistics.median(run[key] for run in result["runs"]))
    # --breakdown: one more first token, hook by hook (tests/tools/test_breakdown.py), in the JSON and printed
    assert {"vision: total", "vision: rest", "prefill: total", "prefill: rest"} <= set(result["breakdown"])
    assert "where one more first token's time went" in capsys.readouterr().out


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
    def installed(version):
        def version_of(name):
            if version is None:
                raise metadata.PackageNotFoundError(name)
            return version
        monkeypatch.setattr(metadata, "version", version_of)

    installed(None)
    with pytest.raises(SystemExit, match="--official needs transformers"):
        bench.main(["--random-init", "--official", str(tmp_path)])
    installed("4.58.1")
    with pytest.raises(SystemExit, match="transformers 4.58.1 is installed; the official code runs with 4.53 to 4.57"):
        bench.main(["--random-init", "--official", str(tmp_path)])
    with pytest.raises(SystemExit, match="on the CPU only"):
        bench.main(["--random-init", "--device", "cuda", "--official", str(tmp_path)])


def test_official_check_does_not_import_transformers(tmp_path, monkeypatch):
    """The peak RSS the bench reports is minivlm's own: checking transformers' version must not import it (65 MB)."""
    for name in ("modeling_jvlm.py", "config.json"):
        (tmp_path / name).write_text("")
    monkeypatch.setattr(metadata, "version", lambda name: "4.57.6")
    monkeypatch.delitem(sys.modules, "transformers", raising=False)
    assert check_official_dir(str(tmp_path)) == tmp_path
    assert "transformers" not in sys.modules


def test_official_inputs_add_the_batch_axis():
    batch = bench.random_init_batch(load_config(FIXTURE_DIR), bench.synthetic_image(640, 480))
    inputs = official_inputs(batch)
    assert inputs["images"].shape == (1, *batch["images"].shape)
    assert inputs["image_input_idx"].shape == (1, *batch["image_input_idx"].shape)
    assert torch.equal(inputs["input_ids"], batch["input_ids"])


def test_what_the_official_aim_asks_of_the_machine():
    """An early bench run once in the README (2026-12-01, 2 cores of an AMD EPYC): 0.6 x the official vision time
    (38.8 s) is 23.28 s, and the vision roofline there was 21.4 s: the aim asks for 21.4 / 23.28 = 91.9 % of the
    matrix rate; the first token's (0.6 x 79.3 = 47.58 s against 35.3 s) 74.2 %."""
    result = {"vision_s": 37.3, "ttft_s": 59.4, "decode_tok_s": 6.85, "vision_roofline_s": 21.4,
              "ttft_roofline_s": 35.3, "vision_roofline_pct": 57.4, "ttft_roofline_pct": 59.4,
              "vision_products_s": 11.64, "ttft_products_s": 57.1,  # the products' times and floors: made up
              "vision_floor_s": 13.97, "ttft_floor_s": 61.86}
    rows = dict(bench.compare_with_official(result, {"vision_s": 38.8, "ttft_s": 79.3, "decode_tok_s": 1.31}))
    assert result["vision_vs_official"] == pytest.approx(0.961, abs=1e-3)
    assert result["decode_vs_official"] == pytest.approx(5.23, abs=1e-2)
    assert result["vision_aim_s"] == pytest.approx(23.28) and result["ttft_aim_s"] == pytest.approx(47.58)
    assert result["vision_aim_roofline_pct"] == pytest.approx(91.9, abs=0.05)
    assert result["ttft_aim_roofline_pct"] == pytest.approx(74.2, abs=0.05)
    assert result["vision_aim_products_pct"] == pytest.approx(50.0) and result["ttft_aim_products_pct"] > 100
    assert result["vision_aim_floor_pct"] == pytest.approx(60.0, abs=0.01)
    assert rows["0.6 x official vision"] == ("23.280 s = 92 % of its roofline (we reach 57 %); the matrix products "
                                             "alone take 50 % of it, with the attention's arithmetic at their rate "
                                             "60 %")
    assert rows["0.6 x official first token"].endswith("the matrix products alone take 120 % of it, with the "
                                                       "attention's arithmetic at their rate 130 %")
    slow = dict(bench.compare_with_official(dict(result), {"vision_s": 30.0, "ttft_s": 79.3, "decode_tok_s": 1.31}))
    assert "(beyond this machine's matrix rate)" in slow["0.6 x official vision"]  # 21.4 / 18 = 119 %


def test_matmul_rate_sustained_is_all_products_over_all_their_time(monkeypatch):
    """A clock on which the first product takes 0.25 s and each later one 1 s (a CPU that slows its matrix units
    after a moment of full use): the sustained rate is all the products' FLOP over all their time, the burst rate
    the first product's, and the faster of the two shapes counts."""
    readings = iter([0.0, 0.25, 1.25, 2.25,  # MLP up: three products in 2.25 s
                     10.0, 11.0, 12.0])  # MLP down: two in 2 s
    monkeypatch.setattr(probes, "device_time", lambda device: next(readings))
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, weight: None)
    sustained, burst = probes.matmul_tflops(torch.device("cpu"), torch.float32, rows=10, seconds=2.0)
    flop = 2 * 10 * 1152 * 4304  # either product
    assert burst == pytest.approx(flop / 0.25 / 1e12)
    assert sustained == pytest.approx(3 * flop / 2.25 / 1e12)


def test_products_alone_are_each_shape_count_times_back_to_back(monkeypatch):
    """time_products: per shape, one untimed warm-up product, then `count` products between two clock readings;
    the shapes' times add up. A scripted clock: 3 qkv-like products in 1.5 s, then 1 in 0.25 s."""
    readings = iter([0.0, 1.5, 7.0, 7.25])
    calls = []
    monkeypatch.setattr(probes, "device_time", lambda device: next(readings))
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, weight: calls.append((x.shape, weight.shape)))
    products = [Product(rows=6, fan_in=4, fan_out=12, count=3), Product(rows=1, fan_in=4, fan_out=5)]
    assert probes.time_products(products, torch.device("cpu"), torch.bfloat16) == pytest.approx(1.75)
    assert calls == [((6, 4), (12, 4))] * 4 + [((1, 4), (5, 4))] * 2  # each shape: warm-up + count


def test_read_rate_is_every_byte_over_the_best_reading(monkeypatch):
    """read_rate_gbps: each repeat reads the tensor's raw bytes once (a maximum: no arithmetic to slow it), the rate
    is all its bytes over the fastest repeat. A scripted clock: repeats of 0.5, 0.25 and 1 s over a bfloat16
    tensor of 1,000 elements (2,000 bytes)."""
    readings = iter([0.0, 0.5, 1.0, 1.25, 2.0, 3.0])
    monkeypatch.setattr(probes, "device_time", lambda device: next(readings))
    read = []
    original_amax = torch.Tensor.amax
    monkeypatch.setattr(torch.Tensor, "amax", lambda t, *a: read.append((t.dtype, t.numel())) or original_amax(t, *a))
    tensor = torch.arange(1000, dtype=torch.bfloat16)
    assert probes.read_rate_gbps(tensor, repeats=3) == pytest.approx(2000 / 0.25 / 1e9)
    assert read == [(torch.uint8, 2000)] * 3
