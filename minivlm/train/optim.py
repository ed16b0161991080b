"""What is trained and how fast: freezing, LoRA's frozen bases, and AdamW's parameter groups per component.

The paper trains every component together (no freezing) and gives the connector a higher learning rate and a
shorter warmup than the pretrained backbones: one AdamW group per (component, decay) pair carries that, each
group's learning rate set every step from `recipe.learning_rate`. Weight decay skips 1-D tensors (norms, biases)
and the additive tables `pad_embed` / `pos_embed`.
"""

from __future__ import annotations

import torch
from torch import nn

from .module import component
from .recipe import GROUPS, learning_rate


def base_key(name: str) -> str:
    """The checkpoint key a parameter belongs to (a LoRA factor belongs to its matrix)."""
    return name.replace(".lora_A", ".weight").replace(".lora_B", ".weight")


def set_trainable(module: nn.Module, recipe: dict) -> None:
    """Frozen: the components in `freeze`, and, with LoRA, the adapted components except their factors."""
    lora = recipe["lora"]
    for name, p in module.named_parameters():
        comp = component(base_key(name))
        is_factor = name.endswith((".lora_A", ".lora_B"))
        frozen = comp in recipe["freeze"] or (lora["rank"] > 0 and comp in lora["components"] and not is_factor)
        p.requires_grad_(not frozen and p.is_floating_point())


def no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or name.endswith(("pad_embed", "pos_embed"))


def make_optimizer(module: nn.Module, recipe: dict) -> torch.optim.AdamW:
    groups = []
    for comp in GROUPS:
        for decay in (True, False):
            params = [p for n, p in module.named_parameters()
                      if p.requires_grad and component(base_key(n)) == comp and no_decay(n, p) != decay]
            if params:
                groups.append({"params": params, "name": comp, "lr": learning_rate(recipe, comp, 0),
                               "weight_decay": recipe["weight_decay"] if decay else 0.0})
    if not groups:
        raise ValueError("nothing to train: every component is frozen")
    return torch.optim.AdamW(groups, betas=tuple(recipe["betas"]), eps=recipe["eps"])


def set_learning_rates(optimizer: torch.optim.Optimizer, recipe: dict, step: int) -> dict[str, float]:
    rates = {}
    for group in optimizer.param_groups:
        group["lr"] = rates[group["name"]] = learning_rate(recipe, group["name"], step)
    return rates
