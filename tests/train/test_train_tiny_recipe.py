"""The demo model is trained by the general trainer: `minivlm.tiny.pretrain` (stage 0, here 0 steps: the random
start) then `python -m minivlm.train --recipe minivlm/train/recipes/tiny.json`, through the paper's stages (and
tiny-counting.json after it: tests/tiny/test_tiny_model.py runs the chain)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import minivlm
from minivlm.tiny.pretrain import pretrain
from minivlm.train.__main__ import main
from minivlm.train.recipe import RecipeError, apply_overrides, read_recipe

from train_helpers import read_losses

RECIPES = Path(minivlm.__file__).parent / "train" / "recipes"


def test_a_few_dozen_steps_of_the_tiny_recipe_lower_the_loss(tmp_path):
    pretrain(tmp_path / "start", steps=0)
    main(["--recipe", str(RECIPES / "tiny.json"), "--model", str(tmp_path / "start"), "--out", str(tmp_path / "run"),
          "--steps", "20", "--batch-size", "4", "--dtype", "float32", "--set", "progress=false", "--set", "val.every=10",
          "--set", "val.samples=4"])
    rows = read_losses(tmp_path / "run")
    assert [r["stage"] for r in rows] == (["alignment"] * 3 + ["instruct-single"] * 6
                                          + ["instruct-mixed"] * 11)  # 600 : 1,000 : 2,000
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3
    assert [bool(r["val_loss"]) for r in rows] == [i in (9, 19) for i in range(20)]
    assert not (tmp_path / "run" / "train_state").exists()  # the shipped folder stays small (final_train_state)
    out = minivlm.load(tmp_path / "run")  # the demo model's checkpoint format, written by the general trainer
    assert out.generate("<|image|>What color is the circle?", [tmp_path / "start" / "example.png"],
                        max_new_tokens=3).token_ids


@pytest.mark.parametrize("name", ["tiny.json", "tiny-counting.json", "jina-vlm-finetune.json"])
def test_shipped_recipes_read_and_take_the_command_line(name, tmp_path):
    from minivlm.train.__main__ import parse_args

    args = parse_args(["--out", "x", "--model", "m", "--data", "a.jsonl", "--data", "b.jsonl", "--steps", "10",
                       "--batch-size", "8", "--lr", "3e-4", "--seed", "5", "--lora-rank", "8", "--dtype", "float32",
                       "--set", "clip=0.5"])
    recipe = apply_overrides(read_recipe(RECIPES / name), args)
    assert sum(s["steps"] for s in recipe["stages"]) == 10
    assert all(s["sources"] == [{"path": "a.jsonl", "weight": 1.0}, {"path": "b.jsonl", "weight": 1.0}]
               for s in recipe["stages"])
    assert (recipe["batch_size"], recipe["lr"], recipe["seed"], recipe["lora"]["rank"], recipe["dtype"],
            recipe["clip"]) == (8, 3e-4, 5, 8, "float32", 0.5)
    toml = tmp_path / "r.toml"
    toml.write_text('lr = 0.5\n[[stages]]\nname = "s"\nsteps = 3\nsources = [{path = "d.jsonl"}]\n')
    recipe = read_recipe(toml)
    assert recipe["lr"] == 0.5 and recipe["stages"][0]["sources"] == [{"path": str(tmp_path / "d.jsonl")}]


def test_recipe_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stagez": []}))
    with pytest.raises(RecipeError, match="bad.json: unknown field.*stagez"):
        read_recipe(bad)
    with pytest.raises(SystemExit, match="no data sources; pass --data"):
        main(["--model", "m", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown component 'vison'"):
        main(["--model", "m", "--data", "d", "--out", str(tmp_path), "--set", 'freeze=["vison"]'])
