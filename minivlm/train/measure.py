"""The cost of one training step at the release's size: `python -m minivlm.train.measure [--steps 3]`.

Random weights with the official architecture (minivlm/configs/jina-vlm, 2.48 B parameters; no download), one
378x378 image + a short text with a 16-token answer, the jina-vlm-finetune recipe's setting: LoRA rank 16 on the
ViT's and decoder's matrices (bases frozen, in bfloat16), the connector trained fully in float32, embeddings
frozen, activation checkpointing per block, bfloat16 autocast. Prints seconds per step and the peak resident
memory of the process, and, from the same numbers, an estimate of full fine-tuning per GPU under FSDP.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..formats.config_json import load_config
from ..tools.random_init import random_init_batch, random_weights, synthetic_image
from .loop import autocast
from .module import VLMModule
from .optim import make_optimizer, set_trainable
from .recipe import DEFAULTS, merge

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "jina-vlm"


def rss_gib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m minivlm.train.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="optimizer steps; the first is reported apart (warm-up)")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--config", default=str(CONFIG), help="folder with config.json and preprocessor_config.json")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    recipe = merge(DEFAULTS, {"dtype": "bfloat16", "freeze": ["embeddings"], "lr": 1e-4,
                              "lora": {"rank": args.lora_rank, "alpha": 2.0 * args.lora_rank}})
    lora = recipe["lora"]
    module = VLMModule(random_weights(cfg, torch.bfloat16, torch.device("cpu")), cfg, lora["rank"], lora["alpha"],
                       tuple(lora["targets"]), tuple(lora["components"]), copy=False)
    set_trainable(module, recipe)
    for param in module.parameters():  # trained tensors in float32 (AdamW's precision), frozen ones stay bf16
        if param.requires_grad:
            param.data = param.data.float()
    for block in [*module.blocks()[0], *module.blocks()[1]]:
        block.checkpointing = True
    optimizer = make_optimizer(module, recipe)
    batch = random_init_batch(cfg, synthetic_image(378, 378), n_text=40)
    targets = torch.full_like(batch["input_ids"], -100)
    targets[:, -17:-1] = batch["input_ids"][:, -16:]  # the last 16 tokens are the answer
    n_total = sum(p.numel() for p in module.parameters())
    n_trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
    before = rss_gib()
    print(f"{n_total / 1e9:.2f} B parameters, {n_trained / 1e6:.1f} M trained; {batch['input_ids'].shape[1]} tokens, "
          f"{len(batch['images'])} crops; RSS before the first step {before:.2f} GiB", flush=True)
    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        with autocast(torch.device("cpu"), "bfloat16"):
            loss = module(batch, targets) / 16
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        print(f"step {step + 1}: {times[-1]:.1f} s, loss {loss.item():.3f}, peak RSS {rss_gib('VmHWM'):.2f} GiB",
              flush=True)
    peak = rss_gib("VmHWM")
    steady = times[1:] or times
    per_step = sum(steady) / len(steady)
    activations = peak - before  # activations, LoRA/connector gradients and AdamW state, transient merged weights
    full = 16 * n_total / 2**30  # float32 weights + gradients + AdamW's two moments, sharded by FSDP
    print(f"LoRA step: {per_step:.1f} s (first {times[0]:.1f} s); peak RSS {peak:.2f} GiB "
          f"(+{activations:.2f} GiB over the loaded model)")
    for n in (1, 2, 4, 8):
        print(f"full fine-tuning under FSDP on {n} GPU(s), estimate: {full / n + activations:.1f} GiB per GPU "
              f"({full:.1f} GiB of states / {n} + {activations:.1f} GiB of activations and transients)")


if __name__ == "__main__":
    main()
