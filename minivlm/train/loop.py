"""The training loop, the same for one CPU and for many GPUs under torchrun.

One process: the module itself. Under torchrun (WORLD_SIZE > 1): torch.distributed with gloo (CPU) or NCCL
(GPU), and PyTorch's own engines: DistributedDataParallel by default, or FSDP2 (`fully_shard` on every block,
then on the whole) for models that do not fit one device. No gradient is all-reduced by hand.

Why any world size gives the same run: each step's GLOBAL batch is drawn from (seed, step) alone and every rank
takes its slice; the summed cross-entropy is divided by the global number of assistant tokens (all-reduced
before the forward) and multiplied by the world size, which undoes the engines' gradient averaging. So one
process with batch B and N processes with B / N each compute the same gradient, up to float rounding.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..core.batch import collate
from ..core.config import with_max_crops
from ..formats.chat import load_chat_template
from ..formats.config_json import load_config
from ..formats.tokenizer import Tokenizer
from ..formats.weights import load_weights
from . import log
from .data import DataError, Encoder, load_source, report, step_draws
from .module import VLMModule
from .optim import make_optimizer, set_learning_rates, set_trainable
from .recipe import stage_at, total_steps
from .state import full_model_state, load_train_state, merge_lora, save_checkpoint, save_train_state


def setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def all_sum(x: torch.Tensor, world: int) -> torch.Tensor:
    """Sum over the processes (on the GPU under NCCL); returns a CPU tensor."""
    if world > 1:
        x = x.cuda() if dist.get_backend() == "nccl" else x
        dist.all_reduce(x)
    return x.cpu()


def autocast(device: torch.device, dtype: str):
    """bfloat16 autocast where the device runs it natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX)."""
    if dtype != "bfloat16":
        return contextlib.nullcontext()
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else \
        torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX") or device.type != "cpu"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=native)


def attention_backend(name: str | None):
    """The recipe's `attention`: pin PyTorch's scaled-dot-product attention to one backend (None: PyTorch picks).

    When "math" (matmul, softmax, matmul, differentiated op by op) pays: on a 2-core AMD EPYC CPU, 40 steps of
    tiny-counting.json, which train the demo model's ViT (bfloat16 autocast, 144-token crops, 32-dim heads), took
    33 s with it against 41 s with the fused CPU kernel PyTorch picks, whose backward is slow for such small heads;
    with the ViT frozen (tiny.json) both took 27 s."""
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, name.upper()))


def wrap(module: VLMModule, recipe: dict, world: int, device: torch.device) -> torch.nn.Module:
    if world == 1:
        return module
    if recipe["parallel"] == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in [*module.blocks()[0], *module.blocks()[1]]:
            fully_shard(block)  # each block's weights are gathered in its pre-forward hook, freed after
        return fully_shard(module)
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def empty_sample(encoder: Encoder) -> dict[str, torch.Tensor]:
    """A one-token sample with no target: keeps a process that drew only bad records in step with the others."""
    v = encoder.cfg.vision
    return {"input_ids": torch.tensor([encoder.tokenizer.bos_id]), "images": torch.zeros(0, v.grid**2, 3 * v.patch_size**2),
            "image_masks": torch.zeros(0, v.grid**2, dtype=torch.long),
            "image_input_idx": torch.zeros(0, v.pooled_per_crop, dtype=torch.long), "targets": torch.tensor([-100])}


def encode_draws(draws, encoder: Encoder, on_bad: str) -> list[dict]:
    samples = []
    for source, seed in draws:
        record = source.draw(random.Random(seed), on_bad)
        if record is None:
            continue
        try:
            samples.append(encoder(record))
        except DataError as e:
            report(e, on_bad)
    return samples


class StepSamples(torch.utils.data.Dataset):
    """The samples of steps start, start + 1, ... (this process's slice of each global batch), for a DataLoader.

    With `data_workers` > 0, DataLoader worker processes draw and encode the next steps (rendering, tiling,
    tokenizing) while this one trains. The samples are the same as without: each draw has its own seed
    (`step_draws`) and the encoding is deterministic. Worth it where cores are spare (beside a GPU); on a 2-core
    AMD EPYC CPU the worker competes with the step's own threads (40 counting steps: 40 s with one worker, 33 s
    without)."""

    def __init__(self, recipe: dict, stages: list, encoder: Encoder, rank: int, world: int, start: int):
        self.recipe, self.stages, self.encoder, self.rank, self.world, self.start = \
            recipe, stages, encoder, rank, world, start

    def __len__(self) -> int:
        return total_steps(self.recipe) - self.start

    def __getitem__(self, i: int) -> list[dict]:
        step, recipe = self.start + i, self.recipe
        index, stage, _ = stage_at(recipe, step)
        draws = step_draws(self.stages[index], stage.get("text_only_share"), stage.get("batching") == "single",
                           recipe["seed"], step, recipe["batch_size"])
        return encode_draws(draws[self.rank::self.world], self.encoder, recipe["on_bad"])


def _as_is(samples: list[dict]) -> list[dict]:  # a step's samples stay a list (collated per micro-batch)
    return samples


def step_samples(dataset: StepSamples, workers: int):
    """The steps' samples in order, from `workers` background processes (0: drawn here, step by step)."""
    return iter(torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is,
        generator=torch.Generator().manual_seed(0)))  # its own generator: the global RNG is left untouched


def batch_loss(model, samples: list[dict], device: torch.device, dtype: str) -> torch.Tensor:
    """Summed cross-entropy over the assistant tokens of `samples` (one micro-batch)."""
    from .data import pad_targets

    batch = {k: v.to(device) for k, v in collate(samples).items()}
    with autocast(device, dtype):
        return model(batch, pad_targets(samples).to(device))


def train(recipe: dict, out: str | Path, resume: str | Path | None = None) -> list[dict]:
    """Run the recipe; write the official checkpoint, losses.csv and loss_curve.png into `out`. Returns the rows."""
    rank, world, device = setup()
    out, src, seed = Path(out), Path(recipe["model"]), recipe["seed"]
    torch.manual_seed(seed)
    random.seed(seed)
    cfg = load_config(src)
    if recipe["max_crops"]:
        cfg = with_max_crops(cfg, recipe["max_crops"])
    lora = recipe["lora"]
    module = VLMModule(load_weights(src, cfg, dtype=torch.float32), cfg, lora["rank"], lora["alpha"],
                       tuple(lora["targets"]), tuple(lora["components"]))
    set_trainable(module, recipe)
    if recipe["dtype"] == "bfloat16" and not (world > 1 and recipe["parallel"] == "fsdp"):
        for p in module.parameters():  # frozen tensors (LoRA's bases) are only read: bfloat16 halves their memory
            if not p.requires_grad and p.is_floating_point():  # (FSDP wants one dtype per sharded group)
                p.data = p.data.to(torch.bfloat16)
    for block in [*module.blocks()[0], *module.blocks()[1]]:
        block.checkpointing = recipe["activation_checkpointing"]
    module.to(device)
    model = wrap(module, recipe, world, device)
    optimizer = make_optimizer(module, recipe)
    trainable = [p for p in module.parameters() if p.requires_grad]
    encoder = Encoder(Tokenizer(src), cfg, load_chat_template(src), recipe["max_length"] or cfg.text.max_sequence_length,
                      cfg.always_start_with_space)
    cache: dict = {}
    stages = [[load_source(s, recipe["on_bad"], cache) for s in st["sources"]] for st in recipe["stages"]]
    val_sources = [load_source(s, recipe["on_bad"], cache) for s in recipe["val"]["sources"]]
    rows, start = [], 0
    if resume:
        state = load_train_state(Path(resume), module, optimizer)
        rows, start = state["losses"], state["step"]
    total, accum, started = total_steps(recipe), recipe["grad_accum"], time.perf_counter()

    def save(dst: Path, step: int, state: bool = True) -> None:  # collective: every rank gathers, rank 0 writes
        params = full_model_state(module)
        if state:
            save_train_state(dst if rank == 0 else None, module, optimizer, step, rows, recipe, params)
        if rank == 0:
            weights = merge_lora(params, lora["alpha"] / max(1, lora["rank"]))
            save_checkpoint(dst, weights, src, cfg, recipe["save_dtype"], recipe["max_shard_bytes"])
            log.write_csv(dst / "losses.csv", rows)
            log.write_curve(dst / "loss_curve.png", rows)

    upcoming = step_samples(StepSamples(recipe, stages, encoder, rank, world, start), recipe["data_workers"])
    for step in range(start, total):
        t0 = time.perf_counter()
        index, stage, _ = stage_at(recipe, step)
        rates = set_learning_rates(optimizer, recipe, step)
        samples = next(upcoming)
        tokens = all_sum(torch.tensor([float(sum(int((s["targets"] >= 0).sum()) for s in samples))]), world)
        if tokens.item() == 0:
            raise DataError(f"step {step + 1}: no assistant token in the whole batch (every record was bad?)")
        loss_sum = torch.zeros(())
        micro = [samples[k::accum] or [empty_sample(encoder)] for k in range(accum)]
        for k, chunk in enumerate(micro):
            sync = k == accum - 1
            ctx = model.no_sync() if world > 1 and not sync and hasattr(model, "no_sync") else contextlib.nullcontext()
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2's no_sync
                model.set_requires_gradient_sync(sync)
            with ctx, attention_backend(recipe["attention"]):  # the backward too (it recomputes checkpointed blocks)
                loss = batch_loss(model, chunk, device, recipe["dtype"])
                (loss * world / tokens.to(device)).backward()
            loss_sum += loss.detach().float().cpu()
        if recipe["clip"]:
            torch.nn.utils.clip_grad_norm_(trainable, recipe["clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "stage": stage.get("name", str(index)),
               "loss": all_sum(loss_sum, world).item() / tokens.item(), "tokens": int(tokens.item()),
               "samples_per_s": recipe["batch_size"] / (time.perf_counter() - t0),
               **{f"lr_{name}": lr for name, lr in rates.items()}}
        val = recipe["val"]
        if val["every"] and val["samples"] and ((step + 1) % val["every"] == 0 or step + 1 == total):
            row["val_loss"] = validate(model, val_sources, encoder, recipe, rank, world, device)
        rows.append(row)
        if rank == 0 and recipe["progress"]:
            log.progress(row, total, time.perf_counter() - started)
        if recipe["save_every"] and (step + 1) % recipe["save_every"] == 0 and step + 1 < total:
            save(out / f"checkpoint-{step + 1}", step + 1)
    if rank == 0 and recipe["progress"]:
        print(file=sys.stderr)
    save(out, total, recipe["final_train_state"])
    if world > 1:
        dist.barrier()
    return rows


@torch.no_grad()
def validate(model, sources, encoder: Encoder, recipe: dict, rank: int, world: int, device: torch.device) -> float:
    """Mean loss per assistant token on fixed draws (step -1 of the seed), split over the processes."""
    draws = step_draws(sources, None, False, recipe["seed"], -1, recipe["val"]["samples"])
    samples = encode_draws(draws[rank::world], encoder, recipe["on_bad"])
    size = max(1, recipe["batch_size"] // (world * recipe["grad_accum"]))
    total = torch.zeros(2)
    for k in range(0, -(-len(draws) // world), size):  # the same number of forwards on every rank (FSDP)
        chunk = samples[k:k + size] or [empty_sample(encoder)]
        with attention_backend(recipe["attention"]):
            loss = batch_loss(model, chunk, device, recipe["dtype"]).float().item()
        total += torch.tensor([loss,
                               sum(float((s["targets"] >= 0).sum()) for s in chunk)])
    total = all_sum(total, world)
    return (total[0] / total[1].clamp(min=1)).item()
