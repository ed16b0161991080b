"""Checkpoint loading: `.safetensors` -> a flat dict of plain tensors, keyed by the official names.

Nothing is renamed: `w["model.vision_model.layers.3.attn.qkv_w.weight"]` is exactly the checkpoint's tensor.
Before any data is read we check every key the config implies, with its shape, and report all problems at
once. Tensors are read one at a time from the memory-mapped file and cast on the way, so loading a float32
checkpoint into bfloat16 never holds two full copies. Only safetensors are read; pickle files never are.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError, safe_open

from ..core import decoder, patch_embed, pooler, vit
from ..core.config import ModelConfig
from .files import read_json
from .files import not_a_file

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_LISTED = 20  # problems listed by name; a wholly different checkpoint would otherwise list hundreds
# The floating-point types safetensors stores that minivlm reads. An integer or bool tensor (a quantized or damaged
# file) would be cast to float silently and answer nonsense; 8-bit floats need scales minivlm does not apply.
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


class WeightsError(ValueError):
    """The checkpoint's tensors do not match what its config.json describes, or a file is missing/broken."""


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official checkpoint with its shape: each component declares the ones it reads."""
    return {**patch_embed.weight_shapes(cfg.vision), **vit.weight_shapes(cfg.vision),
            **pooler.weight_shapes(cfg.vision), **decoder.weight_shapes(cfg.text)}


def unused_keys(cfg: ModelConfig) -> set[str]:
    """Tensors that are checked but never loaded: ViT blocks after the deepest selected one, and post_lnorm."""
    return vit.unread_weights(cfg.vision)


def shard_map(checkpoint_dir: Path) -> dict[str, Path]:
    """key -> file holding it, for a single `model.safetensors` or a sharded index."""
    index_path, single_path = checkpoint_dir / INDEX_FILE, checkpoint_dir / SINGLE_FILE
    if index_path.exists():
        weight_map = _read_index(index_path)
        files = {name: checkpoint_dir / name for name in set(weight_map.values())}
        missing = sorted(str(f) for f in files.values() if not f.exists())
        if missing:
            raise WeightsError(f"{index_path} names shard files that are not there: {', '.join(missing)} "
                               "(an interrupted download? fetch the checkpoint again)")
        for path in files.values():
            _check_file(path)
        return {key: files[name] for key, name in weight_map.items()}
    if single_path.exists():
        with _open(single_path) as f:
            return {key: single_path for key in f.keys()}
    shards = sorted(p.name for p in checkpoint_dir.glob("*.safetensors"))
    pickles = sorted(p.name for pattern in ("*.bin", "*.pt*") for p in checkpoint_dir.glob(pattern))
    if shards:  # without the index we cannot know whether every shard is there
        hint = f" (found {', '.join(shards)} but no index: an incomplete download? fetch {INDEX_FILE} too)"
    elif pickles:
        hint = f" (found {', '.join(pickles)}: pickle checkpoints are never loaded; convert them to safetensors)"
    else:
        hint = ""
    raise WeightsError(f"{checkpoint_dir}: neither {SINGLE_FILE} nor {INDEX_FILE} found{hint}")


def _read_index(index_path: Path) -> dict[str, str]:
    """The index's weight_map {tensor name: shard file name}; every shard must be inside the checkpoint folder."""
    weight_map = read_json(index_path, WeightsError).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise WeightsError(f"{index_path}: weight_map should be an object {{tensor name: shard file name}}, "
                           f"found {_shape_of(weight_map)}")
    for name in set(weight_map.values()):
        # Checked by name, not by resolving links: Hugging Face's cache links every file to a blob elsewhere.
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in name:
            raise WeightsError(f"{index_path}: weight_map names the shard {name!r}, outside the checkpoint folder; "
                               "shard files must be inside it")
    return weight_map


def _shape_of(value) -> str:
    if value is None:
        return "none"
    return f"a {type(value).__name__}" if not isinstance(value, dict) else "an object with non-string entries"


def _check_file(path: Path) -> None:
    problem = not_a_file(path)
    if problem:
        raise WeightsError(f"{path}: {problem}; a weights file should be a regular .safetensors file")


def stored_dtype(checkpoint_dir: str | Path) -> torch.dtype:
    """The dtype the checkpoint's weights are stored in (its LM head's, read from the safetensors header)."""
    locations = shard_map(Path(checkpoint_dir))
    key = "lm_head.weight" if "lm_head.weight" in locations else next(iter(locations))
    with _open(locations[key]) as f:
        name = f.get_slice(key).get_dtype()
    if name not in SAFETENSORS_DTYPES:
        raise WeightsError(f"{locations[key]}: tensor {key} is stored as {name}; minivlm reads "
                           f"{', '.join(SAFETENSORS_DTYPES)} checkpoints")
    return SAFETENSORS_DTYPES[name]


def _open(path: Path):
    _check_file(path)
    try:
        return safe_open(str(path), framework="pt")
    except PermissionError:
        raise WeightsError(f"{path}: permission denied; make the file readable") from None
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e}); re-download it") from None


def check_dtypes(dtypes: dict[str, str], where: str) -> None:
    """Refuse tensors stored as integers or bools (a quantized or damaged checkpoint), naming them."""
    bad = [f"{key} ({dtype})" for key, dtype in dtypes.items() if dtype not in SAFETENSORS_DTYPES]
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise WeightsError(f"{where}: tensors stored as a type that is not a float: {listed}; minivlm reads "
                           f"{', '.join(SAFETENSORS_DTYPES)} weights (a quantized or damaged checkpoint?)")


def check_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], where: str) -> None:
    """Raise one WeightsError listing every missing, unexpected and misshaped tensor."""
    problems = [f"  missing     {k}  expected {list(s)}" for k, s in expected.items() if k not in found]
    problems += [f"  unexpected  {k}  found {list(s)}" for k, s in found.items() if k not in expected]
    problems += [f"  wrong shape {k}  expected {list(s)}, found {list(found[k])}"
                 for k, s in expected.items() if k in found and tuple(found[k]) != s]
    if problems:
        hint = ("; none of the expected tensors is there: is this the official (transformers) Jina-VLM format?"
                if not expected.keys() & found.keys() else "")
        listed = problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            listed.append(f"  ... and {len(problems) - MAX_LISTED} more")
        raise WeightsError(f"{where} does not match its config.json ({len(problems)} problems{hint}):\n"
                           + "\n".join(listed))


def load_weights(checkpoint_dir: str | Path, cfg: ModelConfig, dtype: torch.dtype | None = None,
                 device: str | torch.device = "cpu", check_finite: bool = False) -> dict[str, torch.Tensor]:
    """Read the checkpoint tensor by tensor (memory-mapped), cast each to `dtype` (None keeps the stored one)."""
    root = Path(checkpoint_dir)
    locations = shard_map(root)
    by_file: dict[Path, list[str]] = {}
    for key, path in locations.items():
        by_file.setdefault(path, []).append(key)
    found: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for path, keys in by_file.items():
        with _open(path) as f:
            available = set(f.keys())
            for key in keys:
                if key not in available:
                    raise WeightsError(f"{path}: the index says it holds {key}, but it does not")
                found[key] = tuple(f.get_slice(key).get_shape())
                dtypes[key] = f.get_slice(key).get_dtype()
    check_shapes(found, expected_shapes(cfg), str(root))
    check_dtypes(dtypes, str(root))

    skip = unused_keys(cfg)
    weights: dict[str, torch.Tensor] = {}
    for path, keys in by_file.items():
        for key in keys:
            if key in skip:
                continue
            # One open per tensor: get_tensor returns a view of the memory-mapped file, and the mapping lives
            # as long as its handle. Were the file kept open, every page read so far would stay resident next
            # to its cast copy (a float32 file loaded as bfloat16 would peak at both copies); this way only
            # one tensor's pages are mapped at a time. Without a cast the view itself is kept: zero-copy.
            with _open(path) as f:
                tensor = f.get_tensor(key).to(device=device, dtype=dtype)
            if check_finite and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise WeightsError(f"{path}: tensor {key} contains NaN or Inf values (a corrupt download?)")
            weights[key] = tensor
    return weights


def save_weights(weights: dict[str, torch.Tensor], checkpoint_dir: str | Path, max_shard_bytes: int | None = None) -> None:
    """Write tensors the way the official checkpoints are laid out: one `model.safetensors`, or, above
    `max_shard_bytes`, `model-0000k-of-0000n.safetensors` shards plus `model.safetensors.index.json`."""
    from safetensors.torch import save_file

    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {k: w.detach().cpu().contiguous() for k, w in weights.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(root / SINGLE_FILE), metadata={"format": "pt"})
        return
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(root / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
