"""The recipe: one JSON (or TOML) file that says how to train, with command-line overrides on top.

The paper's recipe and the field that carries each point (README "Training and fine-tuning" has the table):
two stages (`stages`: alignment, then instruction tuning split into single-source then mixed-source batches,
`batching`), caption-heavy alignment data with ~15% text-only (`sources`, `text_only_share`), every component
trained (`freeze` empty), the connector on a higher learning rate and a shorter warmup (`groups.connector`).

A learning rate is `lr` x the group's `lr_scale`; warmup is a fraction of each stage's steps, then cosine decay
to `min_lr_ratio` of the peak; each stage restarts the schedule (a stage may override `groups`).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

GROUPS = ("vision", "connector", "decoder", "embeddings")
ATTENTION_BACKENDS = ("math", "flash_attention", "efficient_attention", "cudnn_attention")  # torch's SDPBackend names

DEFAULTS: dict = {
    "model": None,  # checkpoint folder to start from (--model)
    "dtype": "float32",  # "bfloat16": autocast where the device runs it natively; weights and AdamW stay float32
    "batch_size": 8,  # GLOBAL: samples per optimizer step over all processes
    "grad_accum": 1,  # micro-batches per process and step
    "seed": 0,
    "lr": 1e-4,
    "groups": {g: {"lr_scale": 1.0, "warmup": 0.05} for g in GROUPS},
    "min_lr_ratio": 0.1,
    "weight_decay": 0.01,  # never on norms, biases, pad/position embeddings (1-D tensors and tables)
    "betas": [0.9, 0.999],
    "eps": 1e-8,  # AdamW's
    "clip": 1.0,  # max gradient norm (0: no clipping)
    "freeze": [],  # components kept fixed (bit-identical)
    "lora": {"rank": 0, "alpha": 16.0, "targets": ["attn.qkv_w", "attn.out", "ffn.up", "ffn.down"],
             "components": ["vision", "decoder"]},
    "activation_checkpointing": False,
    "attention": None,  # SDPA backend while training: None (PyTorch picks) or "math", "flash_attention", ...
    "parallel": "ddp",  # under torchrun: "ddp" or "fsdp" (fully_shard per block)
    "max_length": None,  # tokens per sample; None: the model's max_sequence_length
    "max_crops": None,  # override the preprocessor's max_crops (fewer tokens per image)
    "on_bad": "skip",  # bad records: "skip" (reported) or "error"
    "data_workers": 0,  # DataLoader worker processes drawing and encoding the next steps while one trains
    "save_every": 0,  # also write out/checkpoint-<step> every N steps (0: only at the end)
    "save_dtype": "float32",
    "final_train_state": True,  # also write out/train_state (to continue later); periodic checkpoints always have it
    "max_shard_bytes": None,  # split model.safetensors into shards + index above this size
    "val": {"sources": [], "samples": 0, "every": 0},  # validation loss on `samples` fixed draws every N steps
    "progress": True,
    "stages": [{"name": "finetune", "steps": 100, "sources": [], "text_only_share": None, "batching": "mixed"}],
}


class RecipeError(ValueError):
    pass


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def read_recipe(path: str | Path) -> dict:
    """The file merged over DEFAULTS; source paths are made relative to the recipe file."""
    path = Path(path)
    try:
        if path.suffix == ".toml":
            import tomllib
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecipeError(f"{path}: cannot read the recipe ({e})") from None
    unknown = sorted(set(data) - set(DEFAULTS) - {"comment"})
    if unknown:
        raise RecipeError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    for stage in data.get("stages", []) + [data.get("val", {})]:
        for src in stage.get("sources", []):
            if "path" in src and not Path(src["path"]).is_absolute():
                src["path"] = str(path.parent / src["path"])
    return merge(DEFAULTS, data)


def set_field(recipe: dict, assignment: str) -> None:
    """--set a.b=JSON (e.g. groups.connector.lr_scale=10, stages.0.steps=50)."""
    key, _, value = assignment.partition("=")
    *parents, last = key.split(".")
    node = recipe
    try:
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        parsed = json.loads(value) if value else None
    except (KeyError, IndexError, ValueError):
        raise RecipeError(f"--set {assignment}: no such field or not a JSON value") from None
    if isinstance(node, list):
        node[int(last)] = parsed
    else:
        node[last] = parsed


def apply_overrides(recipe: dict, args) -> dict:
    """The fixed command-line contract on top of the recipe."""
    for field in ("model", "seed", "lr", "dtype", "batch_size", "parallel", "on_bad"):
        if getattr(args, field, None) is not None:
            recipe[field] = getattr(args, field)
    if args.lora_rank is not None:
        recipe["lora"]["rank"] = args.lora_rank
    if args.data:  # every stage trains on these files, equally weighted
        for stage in recipe["stages"]:
            stage["sources"] = [{"path": p, "weight": 1.0} for p in args.data]
    if args.steps is not None:  # spread over the stages in the recipe's proportions
        total = sum(s["steps"] for s in recipe["stages"])
        bounds = [round(args.steps * sum(s["steps"] for s in recipe["stages"][:i + 1]) / total)
                  for i in range(len(recipe["stages"]))]
        for stage, lo, hi in zip(recipe["stages"], [0] + bounds, bounds):
            stage["steps"] = hi - lo
        recipe["stages"] = [s for s in recipe["stages"] if s["steps"] > 0]
    for assignment in args.set or []:
        set_field(recipe, assignment)
    check(recipe)
    return recipe


def check(recipe: dict) -> None:
    if not recipe["model"]:
        raise RecipeError("no model: pass --model DIR (or set 'model' in the recipe)")
    if recipe["dtype"] not in ("float32", "bfloat16"):
        raise RecipeError(f"dtype: expected float32 or bfloat16, found {recipe['dtype']!r}")
    if not isinstance(recipe["data_workers"], int) or recipe["data_workers"] < 0:
        raise RecipeError(f"data_workers: expected 0 or more processes, found {recipe['data_workers']!r}")
    if recipe["parallel"] not in ("ddp", "fsdp"):
        raise RecipeError(f"parallel: expected ddp or fsdp, found {recipe['parallel']!r}")
    if recipe["attention"] is not None and recipe["attention"] not in ATTENTION_BACKENDS:
        raise RecipeError(f"attention: expected null or one of {', '.join(ATTENTION_BACKENDS)}, "
                          f"found {recipe['attention']!r}")
    for name in recipe["freeze"] + list(recipe["groups"]):
        if name not in GROUPS:
            raise RecipeError(f"unknown component {name!r}; components are {', '.join(GROUPS)}")
    for i, stage in enumerate(recipe["stages"]):
        if not stage.get("sources"):
            raise RecipeError(f"stages.{i} ({stage.get('name')}): no data sources; pass --data FILE.jsonl")
        if stage.get("batching", "mixed") not in ("mixed", "single"):
            raise RecipeError(f"stages.{i}.batching: expected 'mixed' or 'single', found {stage['batching']!r}")


def stage_at(recipe: dict, step: int) -> tuple[int, dict, int]:
    """(stage index, stage, its first step) of a global step."""
    start = 0
    for i, stage in enumerate(recipe["stages"]):
        if step < start + stage["steps"]:
            return i, stage, start
        start += stage["steps"]
    raise IndexError(step)


def total_steps(recipe: dict) -> int:
    return sum(s["steps"] for s in recipe["stages"])


def group_settings(recipe: dict, stage: dict, group: str) -> dict:
    return merge(recipe["groups"].get(group, {"lr_scale": 1.0, "warmup": 0.05}), stage.get("groups", {}).get(group, {}))


def learning_rate(recipe: dict, group: str, step: int) -> float:
    """Linear warmup over the group's fraction of the stage, then cosine decay to min_lr_ratio of the peak."""
    _, stage, start = stage_at(recipe, step)
    g = group_settings(recipe, stage, group)
    peak, n, t = recipe["lr"] * g["lr_scale"], stage["steps"], step - start
    warm = max(1, math.ceil(g["warmup"] * n)) if g["warmup"] > 0 else 0
    if t < warm:
        return peak * (t + 1) / warm
    progress = (t - warm) / max(1, n - warm)
    floor = recipe["min_lr_ratio"]
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
