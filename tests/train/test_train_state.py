"""Resume, freezing and learning-rate schedules of `python -m minivlm.train`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from minivlm.train.recipe import DEFAULTS, learning_rate, merge

from train_helpers import FIXTURE, data, text_data, train  # noqa: F401,F811 (fixtures)

ARGS = ["--batch-size", "2", "--seed", "1"]


def test_resume_at_step_k_equals_an_uninterrupted_run(text_data, tmp_path):
    """Stop-and-resume from checkpoint-2 (optimizer, schedule, data position, RNG) gives the same weights and
    losses as four steps in one go, bit for bit."""
    full = train(tmp_path / "full", "--data", str(text_data), "--steps", "4", "--set", "save_every=2", *ARGS)
    ckpt = tmp_path / "full" / "checkpoint-2"
    assert sorted(p.name for p in (ckpt / "train_state").iterdir()) == \
        ["optimizer.safetensors", "params.safetensors", "rng.safetensors", "state.json"]
    assert not list(ckpt.rglob("*.pt")) and not list(ckpt.rglob("*.bin"))  # nothing pickled
    resumed = train(tmp_path / "resumed", "--data", str(text_data), "--steps", "4", "--resume", str(ckpt), *ARGS)
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]  # noqa: E731
    assert timeless(resumed) == timeless(full)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    interrupted = load_file(ckpt / "model.safetensors")
    assert not all(torch.equal(a[k], interrupted[k]) for k in a)  # the last two steps did change the weights


def test_frozen_components_stay_bit_identical(data, tmp_path):
    train(tmp_path, "--data", str(data), "--steps", "2", "--set", 'freeze=["vision", "embeddings"]', *ARGS)
    before, after = load_file(FIXTURE / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    frozen = [k for k in before if k.startswith("model.vision_model.") and ".vl_connector." not in k]
    frozen += ["lm_head.weight", "model.language_model.embedding.embedding", "model.language_model.embedding.new_embedding"]
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    trained = [k for k in before if ".vl_connector." in k or ".language_model.layers." in k]
    assert sum(not torch.equal(before[k], after[k]) for k in trained) > len(trained) // 2


def test_each_parameter_group_follows_its_own_schedule(text_data, tmp_path):
    """Connector: 5x the rate, no warmup; decoder: warmup over half the stage; then cosine to min_lr_ratio."""
    groups = {"connector": {"lr_scale": 5.0, "warmup": 0.0}, "decoder": {"lr_scale": 1.0, "warmup": 0.5}}
    rows = train(tmp_path, "--data", str(text_data), "--steps", "4", "--set", f"groups={json.dumps(groups)}",
                 "--set", "min_lr_ratio=0.1", *ARGS)
    lr = 1e-3
    cosine = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]  # no warmup: over 4 steps
    assert [float(r["lr_connector"]) for r in rows] == pytest.approx([5 * lr * c for c in cosine])
    decoder = [lr / 2, lr, lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(0))), lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))]
    assert [float(r["lr_decoder"]) for r in rows] == pytest.approx(decoder)
    # and the optimizer really used them: the connector group is in the saved optimizer state with its last lr
    state = json.loads((tmp_path / "train_state" / "state.json").read_text())
    used = {g["name"]: g["lr"] for g in state["param_groups"]}
    assert used["connector"] == pytest.approx(5 * lr * cosine[3]) and used["decoder"] == pytest.approx(decoder[3])


def test_schedules_restart_per_stage_with_stage_overrides():
    recipe = merge(DEFAULTS, {"lr": 1.0, "min_lr_ratio": 0.0, "groups": {"vision": {"lr_scale": 1.0, "warmup": 0.5}},
                              "stages": [{"steps": 4, "sources": [1]},
                                         {"steps": 2, "sources": [1], "groups": {"vision": {"lr_scale": 0.5, "warmup": 0}}}]})
    assert [learning_rate(recipe, "vision", s) for s in range(6)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.5, 0.25])


def test_only_checkpoint_files_are_copied(tmp_path):
    """The trained folder gets the configs, tokenizer and template of the start, not its README or golden data."""
    from minivlm.train.state import copy_checkpoint_files

    (tmp_path / "start").mkdir()
    for name in ("config.json", "tokenizer.json", "chat_template.jinja", "modeling_jvlm.py", "README.md", "cases.json",
                 "keys.txt", "model.safetensors"):
        (tmp_path / "start" / name).write_text("x")
    copy_checkpoint_files(tmp_path / "start", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "chat_template.jinja", "config.json", "modeling_jvlm.py", "tokenizer.json"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_attention_math_trains_as_pytorchs_pick_and_is_in_force(data, tmp_path, record_flash_enabled, checkpointing):
    """`attention: "math"` (the demo model's counting recipe): every attention of the step, forward and the
    recomputed forward of checkpointed blocks in the backward, runs with only the math backend enabled, and the
    losses equal those of PyTorch's own pick to float32 rounding (1e-5: the two sum in other orders), the second
    step's after an update from the first step's gradients. (Not the weights: AdamW's first steps move each weight
    by about +-lr whatever its gradient's size, so a gradient near zero flips its step on a rounding.)"""
    run = lambda name, *more: train(tmp_path / name, "--data", str(data), "--steps", "3",  # noqa: E731
                                    "--set", f"activation_checkpointing={json.dumps(checkpointing)}", *more, *ARGS)
    default = run("default")
    flash_enabled = record_flash_enabled()
    math_rows = run("math", "--set", 'attention="math"')
    assert flash_enabled and not any(flash_enabled)
    assert [float(r["loss"]) for r in math_rows] == pytest.approx([float(r["loss"]) for r in default], rel=1e-5)


def test_unknown_attention_backend_is_refused():
    from minivlm.train.recipe import RecipeError, check

    recipe = merge(DEFAULTS, {"model": "m", "attention": "fast"})
    with pytest.raises(RecipeError, match="attention: expected null or one of math, flash_attention"):
        check(recipe)


def test_a_data_worker_process_gives_the_same_run_bit_for_bit(data, tmp_path):
    """`data_workers` 1 (the default: the next steps are drawn and encoded in a background process) and 0 (in the
    training loop) train on the same samples: the same losses and weights, bit for bit, and the same resumable
    state after a checkpoint."""
    runs = {n: train(tmp_path / str(n), "--data", str(data), "--steps", "3", "--set", f"data_workers={n}", *ARGS)
            for n in (0, 1)}
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]  # noqa: E731
    assert timeless(runs[0]) == timeless(runs[1])
    a, b = load_file(tmp_path / "0" / "model.safetensors"), load_file(tmp_path / "1" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
