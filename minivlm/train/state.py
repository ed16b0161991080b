"""Saving: official-format checkpoints (what `minivlm.load` and transformers read) and exact-resume state.

A checkpoint folder holds config.json, model.safetensors (or shards + index), the tokenizer, processor and
chat-template files copied from the starting checkpoint, and `train_state/`:

  params.safetensors     the trainable module's tensors, LoRA factors unmerged, float32
  optimizer.safetensors  AdamW's moments and step per parameter ("<key>::exp_avg", ...)
  rng.safetensors        torch's RNG states (uint8)
  state.json             step, losses so far, parameter-group hyper-parameters, Python's RNG state, recipe

Safetensors and JSON only: nothing is pickled, so a checkpoint cannot run code when it is loaded. The state dicts
come from torch.distributed.checkpoint's helpers, which gather FSDP shards into full tensors (and scatter them back).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from ..core.config import ModelConfig
from ..formats.weights import INDEX_FILE, SINGLE_FILE, save_weights, shard_map, unused_keys

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def merge_lora(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Plain checkpoint tensors: W + scale · B A for every LoRA-adapted W, factors dropped."""
    out = {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    for key in state:
        if key.endswith(".lora_A"):
            base = key[: -len("lora_A")]
            delta = (state[base + "lora_B"].float() @ state[key].float()) * scale  # [out, in]
            out[base + "weight"] = (out[base + "weight"].float() + delta).to(out[base + "weight"].dtype)
    return out


# The files of an official checkpoint besides its weights; anything else in the folder (a README, notes, golden
# outputs of the starting weights) describes the starting checkpoint, not the trained one, and is not copied.
CHECKPOINT_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


def copy_checkpoint_files(src: Path, dst: Path) -> None:
    """The starting checkpoint's files but its weights: configs, tokenizer, chat template, remote code (*.py)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and (f.name in CHECKPOINT_FILES or f.suffix == ".py"):
            shutil.copy2(f, dst / f.name)


def save_checkpoint(dst: Path, weights: dict[str, torch.Tensor], src: Path, cfg: ModelConfig, dtype: str,
                    max_shard_bytes: int | None) -> None:
    """Official format. Tensors minivlm never runs (ViT blocks past the deepest selected one, post_lnorm) are
    copied unchanged from the starting checkpoint, so the file has every key the official loader expects."""
    out = {k: w.to(DTYPES[dtype]) for k, w in weights.items()}
    locations = shard_map(src)
    for key in sorted(unused_keys(cfg)):  # read before anything is written: dst may be src
        with safe_open(str(locations[key]), framework="pt") as f:
            out[key] = f.get_tensor(key).to(DTYPES[dtype])
    if dst.resolve() != src.resolve():
        copy_checkpoint_files(src, dst)
    for stale in [*dst.glob("model-*-of-*.safetensors"), dst / SINGLE_FILE, dst / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    save_weights(out, dst, max_shard_bytes)


def full_model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Collective under FSDP: every process must call it; all get the full tensors on CPU."""
    return get_model_state_dict(module, options=FULL)


def save_train_state(dst: Path, module, optimizer, step: int, losses: list[dict], recipe: dict,
                     params: dict[str, torch.Tensor]) -> None:
    """Collective (the optimizer state is gathered); only the caller with a `dst` (rank 0) writes."""
    osd = get_optimizer_state_dict(module, optimizer, options=FULL)
    if dst is None:
        return
    folder = dst / "train_state"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in params.items()}, str(folder / "params.safetensors"))
    tensors = {f"{key}::{name}": value.contiguous().cpu()
               for key, entry in osd["state"].items() for name, value in entry.items()}
    save_file(tensors, str(folder / "optimizer.safetensors"))
    save_file({"torch": torch.get_rng_state()}, str(folder / "rng.safetensors"))
    groups = [{k: v for k, v in g.items()} for g in osd["param_groups"]]
    state = {"step": step, "losses": losses, "param_groups": groups, "python_random": _jsonable(random.getstate()),
             "recipe": recipe}
    (folder / "state.json").write_text(json.dumps(state, indent=1) + "\n")


def load_train_state(src: Path, module, optimizer) -> dict:
    """Restore weights, optimizer and RNGs from `src/train_state`; returns state.json (step, losses, ...)."""
    folder = src / "train_state"
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"{folder}/state.json not found: --resume needs a folder written by minivlm.train")
    state = json.loads((folder / "state.json").read_text())
    set_model_state_dict(module, load_file(str(folder / "params.safetensors")), options=StateDictOptions(full_state_dict=True))
    entries: dict[str, dict] = {}
    for name, value in load_file(str(folder / "optimizer.safetensors")).items():
        key, _, field = name.rpartition("::")
        entries.setdefault(key, {})[field] = value
    osd = {"state": entries, "param_groups": state["param_groups"]}
    set_optimizer_state_dict(module, optimizer, osd, options=StateDictOptions(full_state_dict=True))
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    random.setstate(_tupled(state["python_random"]))
    return state


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tupled(x):
    return tuple(_tupled(v) for v in x) if isinstance(x, list) else x
