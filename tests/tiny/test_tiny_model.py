"""The embedded demo model (minivlm/tiny/minivlm-tiny): it loads like an official checkpoint, is small, answers
fresh questions of the shapes task correctly, and its training code still trains."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_DIR

import minivlm
from minivlm.tiny import DEMO_DIR
from minivlm.tiny import task as tiny_task
from minivlm.tiny.checkpoint import Sizes
from minivlm.tiny.eval import evaluate, format_table

TINY = DEMO_DIR
RECIPE = Path(minivlm.__file__).parent / "train" / "recipes" / "tiny.json"
COUNTING_RECIPE = RECIPE.with_name("tiny-counting.json")
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
         "preprocessor_config.json", "processor_config.json", "generation_config.json", "chat_template.jinja",
         "example.png")


@pytest.fixture(scope="module")
def tiny() -> minivlm.VLM:
    return minivlm.load(TINY, check_weights=True)


def test_shipped_folder_is_complete_and_small():
    for name in FILES:
        assert (TINY / name).is_file(), name
    size = sum(f.stat().st_size for f in TINY.rglob("*") if f.is_file())
    assert size < 20 * 2**20, f"minivlm/tiny/minivlm-tiny is {size / 2**20:.1f} MiB"


def test_shipped_files_tile_like_the_release(tiny):
    """The shipped configs are `Sizes()`' (168 px crops, 2-patch margins, max_crops 4: what `make train-tiny`
    writes), and most of the task's images are cut into a thumbnail plus two or more overlapping tiles."""
    from minivlm.core.tiler import token_counts
    from minivlm.tiny.checkpoint import config_json, preprocessor_json

    for name, make in (("config.json", config_json), ("preprocessor_config.json", preprocessor_json)):
        assert json.loads((TINY / name).read_text()) == json.loads(json.dumps(make(Sizes()))), name
    cfg = tiny.cfg
    assert (cfg.vision.crop_size, cfg.preprocessor.overlap_margins, cfg.preprocessor.max_crops) == (168, (2, 2), 4)
    rng = random.Random(5)
    scenes = [tiny_task.draw_scene(rng) for _ in range(300)]
    tiles = [math.prod(token_counts(s.width, s.height, cfg).tiling) for s in scenes]
    assert sum(t >= 2 for t in tiles) >= 0.9 * len(tiles), sorted(tiles)


def test_loads_like_the_official_checkpoint(tiny):
    fixture = json.loads((FIXTURE_DIR / "config.json").read_text())
    ours = json.loads((TINY / "config.json").read_text())

    def keys(d, prefix=""):
        return {prefix + k for k in d} | {k for key, v in d.items() if isinstance(v, dict)
                                          for k in keys(v, prefix + key + ".")}
    missing = {k for k in keys(fixture) - keys(ours) if k.split(".")[0] not in ("auto_map", "transformers_version")}
    assert not missing  # the same schema, every field (auto_map names remote code minivlm does not need)
    im_end, eot = tiny.tokenizer.token_id("<|im_end|>"), tiny.tokenizer.token_id("<|endoftext|>")
    assert set(tiny.stop_ids) == {im_end, eot}
    assert tiny.cfg.text.embedding_size - 1 == im_end  # the official special-id layout
    prompt = tiny.render_chat([{"role": "user", "content": "What color is the circle?"}], 1)
    assert prompt == "<|im_start|>user\n<|image|>What color is the circle?<|im_end|>\n<|im_start|>assistant\n"


def test_demo_answer(tiny):
    from minivlm.formats.image_io import open_image

    out = tiny.chat([{"role": "user", "content": "What color is the circle?"}], [open_image(TINY / "example.png")])
    assert out.text == "green" and out.token_ids[-1] in tiny.stop_ids


def test_cli_defaults_to_the_tiny_model():
    done = subprocess.run([sys.executable, "-m", "minivlm.generate", "--image", str(TINY / "example.png"),
                           "--prompt", "Welche Farbe hat das Quadrat?"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "blau"


N_FRESH = 240  # questions CI asks (issue #17: at least 200, at least 93 % right)


@pytest.fixture(scope="module")
def scores(tiny) -> dict[str, float]:
    return evaluate(tiny, n=N_FRESH, seed=2024)  # a seed used neither in training nor in the README's table


def test_accuracy_on_fresh_questions(scores):
    print(format_table(scores))
    assert scores["overall"] >= 0.93, format_table(scores)


def test_evaluation_breakdown(scores):
    """Each question is counted once per language, once per type, and under "identical" exactly when it is a
    count question about a scene where two shapes share kind and colour (recounted here from the same draw)."""
    rng = random.Random(2024)
    drawn = [tiny_task.sample_scene(rng) for _ in range(N_FRESH)]
    same = [qa.qtype for scene, qa in drawn if qa.qtype in ("count", "count_color")
            and len({(s.kind, s.color) for s in scene.shapes}) < len(scene.shapes)]
    assert scores["n:overall"] == N_FRESH
    assert sum(scores[f"n:{lang}"] for lang in ("en", "de", "es", "zh")) == N_FRESH
    assert sum(scores[f"n:{t}"] for t in ("color", "count", "count_color", "shape", "left")) == N_FRESH
    assert scores["n:identical"] == len(same) > 0
    assert scores["n:identical/count"] == same.count("count")
    assert all(0 <= v <= 1 for k, v in scores.items() if not k.startswith("n:"))
    table = format_table(scores)
    assert "left" in table and "count_color" in table and f"identical shapes: {100 * scores['identical']:.1f}%" in table


def test_training_steps_lower_the_loss(tmp_path):
    """`make train-tiny` in miniature, on a very small model: stage 0 (`minivlm.tiny.pretrain`), then the
    paper's stages through the general trainer and the tiny recipe (ViT and connector frozen: bit-identical),
    then the counting recipe (everything trained). Every stage's loss goes down and each folder the trainer
    writes loads like any checkpoint."""
    import csv

    from safetensors.torch import load_file
    from minivlm.tiny.pretrain import pretrain
    from minivlm.train.__main__ import main

    sizes = Sizes(vision_width=32, vision_layers=3, text_width=32, text_layers=1, text_heads=2, text_kv_heads=1)
    probe = pretrain(tmp_path / "start", steps=8, sizes=sizes, batch_size=4, progress=False)
    assert sum(probe[-3:]) < sum(probe[:3]), probe
    common = ["--batch-size", "4", "--lr", "5e-3", "--dtype", "float32", "--set", "progress=false",
              "--set", "val.every=0"]
    main(["--recipe", str(RECIPE), "--model", str(tmp_path / "start"), "--out", str(tmp_path / "run"), *common,
          *sum((["--set", f"stages.{i}.steps=8"] for i in range(3)), [])])
    main(["--recipe", str(COUNTING_RECIPE), "--model", str(tmp_path / "run"), "--out", str(tmp_path / "counting"),
          *common, "--set", "stages.0.steps=8"])
    rows = [r for run in ("run", "counting") for r in csv.DictReader((tmp_path / run / "losses.csv").open())]
    assert len(rows) == 32
    for stage in ("alignment", "instruct-single", "instruct-mixed", "instruct-counting"):
        losses = [float(r["loss"]) for r in rows if r["stage"] == stage]
        assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3]), (stage, losses)
    start, run, counting = (load_file(tmp_path / name / "model.safetensors") for name in ("start", "run", "counting"))
    vision = [k for k in start if k.startswith("model.vision_model.")]  # the ViT and the connector
    assert vision and all(torch.equal(start[k], run[k]) for k in vision)  # tiny.json: frozen, bit for bit
    assert not any(torch.equal(start[k], run[k]) for k in start if k not in vision)  # the decoder learns
    assert sum(not torch.equal(run[k], counting[k]) for k in vision) >= 0.5 * len(vision)  # tiny-counting: all learn
    for name in ("run", "counting"):
        minivlm.load(tmp_path / name, check_weights=True)  # what it saved is a loadable checkpoint
