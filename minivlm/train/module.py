"""The trainable model: a thin nn.Module around a checkpoint's tensors, whose forward is minivlm's own functions.

Why a module at all: PyTorch's distributed engines (DistributedDataParallel, FSDP2's `fully_shard`), activation
checkpointing and optimizers speak nn.Module. So the checkpoint's flat dict becomes nested modules that mirror
its key paths, and `module.state_dict()` keys ARE the checkpoint keys ("model.vision_model.layers.3.attn.out.weight").

Nothing is re-implemented: each ViT block's forward is `vit.vit_block`, each decoder block's `decoder.decoder_block`;
the vision half is `generation.encode_images` with the blocks run as modules (its `run_block`), and the rest is
`decoder.embed_tokens`, `add_image_features`, `rms_norm`, `lm_head`. Only the few lines of the decoder's loop
(`prefill` / `run_decoder`) are repeated here, so that each decoder block is called AS A MODULE with no KV cache
(FSDP unshards a block's weights in its pre-forward hook) and can be wrapped in activation checkpointing. A test
checks that the logits equal core's `prefill` + `lm_head`.

LoRA (optional, on chosen matrices): the block keeps the frozen matrix W and two small factors A [r, in],
B [out, r] (B starts at zero), and hands the core function W + (alpha / r) B A. Merging for saving is that sum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..core.config import ModelConfig
from ..core.decoder import KVCache, add_image_features, attention_mask, decoder_block, embed_tokens, lm_head
from ..core.generation import encode_images
from ..core.layers import rms_norm
from ..core.rope import rope_angles
from ..core.vit import vit_block

VIT_BLOCKS, TEXT_BLOCKS = "model.vision_model.layers.", "model.language_model.layers."


def component(key: str) -> str:
    """The parameter group a checkpoint key belongs to: vision, connector, decoder or embeddings."""
    if key.startswith("model.vision_model.vl_connector."):
        return "connector"
    if key.startswith("model.vision_model."):
        return "vision"
    if key.startswith("model.language_model.embedding.") or key == "lm_head.weight":
        return "embeddings"
    return "decoder"


class Tensors(nn.Module):
    """A node of the key tree: holds parameters and child nodes named by the key's dotted parts."""

    def __init__(self, prefix: str = ""):
        super().__init__()
        self.prefix = prefix

    def put(self, path: str, value: nn.Parameter) -> None:
        node: nn.Module = self
        *parents, name = path.split(".")
        for i, part in enumerate(parents):
            if part not in node._modules:
                node.add_module(part, Tensors(self.prefix + ".".join(parents[:i + 1]) + "."))
            node = node._modules[part]
        node.register_parameter(name, value)

    def mapping(self, skip: tuple[str, ...] = ()) -> dict[str, Tensor]:
        """{full checkpoint key: tensor} of this subtree, LoRA factors merged in (what the core functions read);
        `skip`: name prefixes left out."""
        out = {}
        for name, p in self.named_parameters():
            if name.endswith((".lora_A", ".lora_B")) or name.startswith(skip):
                continue
            key = self.prefix + name
            owner = self.get_submodule(name.rpartition(".")[0]) if "." in name else self
            out[key] = owner.merged(name.rpartition(".")[2], p) if isinstance(owner, LoRANode) else p
        return out


class LoRANode(Tensors):
    """The node owning one LoRA-adapted matrix, e.g. `...attn.qkv_w` with `weight`, `lora_A`, `lora_B`."""

    def __init__(self, prefix: str, rank: int, alpha: float, shape: tuple[int, int]):
        super().__init__(prefix)
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, shape[1]) / math.sqrt(shape[1]))  # [r, in]
        self.lora_B = nn.Parameter(torch.zeros(shape[0], rank))  # [out, r]: the adapter starts as a no-op

    def merged(self, name: str, weight: Tensor) -> Tensor:
        if name != "weight":
            return weight
        delta = (self.lora_B @ self.lora_A) * self.scale  # [out, in]
        return weight + delta.to(weight.dtype)


class Block(Tensors):
    """One transformer block; forward = the core block function on this block's tensors."""

    checkpointing = False  # activation checkpointing: keep only the block's input, recompute inside on backward

    def __init__(self, prefix: str, index: int, cfg: ModelConfig):
        super().__init__(prefix)
        self.index, self.cfg = index, cfg

    def forward(self, x: Tensor, *args) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self.run, x, *args, use_reentrant=False)
        return self.run(x, *args)


class VitBlock(Block):
    def run(self, x: Tensor) -> Tensor:  # x [crops, patches, width]
        return vit_block(x, self.mapping(), self.index, self.cfg.vision)


class DecoderBlock(Block):
    def run(self, x: Tensor, cos: Tensor, sin: Tensor, valid: Tensor, mask: Tensor | None) -> Tensor:
        # A fresh one-layer cache per call keeps the block a pure function of its inputs (checkpointing recomputes).
        j, (batch, length, _) = self.index, x.shape
        cfg = self.cfg.text
        shape = (batch, cfg.n_kv_heads, length, cfg.head_dim)
        cache = KVCache({j: x.new_zeros(shape)}, {j: x.new_zeros(shape)}, valid)
        return decoder_block(x, self.mapping(), j, cfg, cos, sin, cache, 0, mask)


class VLMModule(Tensors):
    """The whole model. forward(batch) -> final hidden states [B, L, width] (then `logits` for the vocabulary)."""

    def __init__(self, weights: dict[str, Tensor], cfg: ModelConfig, lora_rank: int = 0, lora_alpha: float = 16.0,
                 lora_targets: tuple[str, ...] = (), lora_components: tuple[str, ...] = (), copy: bool = True):
        """`copy=False` adopts the tensors as they are (fresh ones, e.g. random weights: no second copy in memory);
        keep the default for `load_weights`' output, which may be views of the memory-mapped file."""
        super().__init__()
        self.cfg = cfg
        v, t = cfg.vision, cfg.text
        for prefix, n, kind in ((VIT_BLOCKS, max(v.selected_blocks) + 1, VitBlock), (TEXT_BLOCKS, t.n_layers, DecoderBlock)):
            self.put_module(prefix.rstrip("."), nn.ModuleList(kind(f"{prefix}{i}.", i, cfg) for i in range(n)))
        for key, tensor in weights.items():  # LoRA nodes first: a matrix's bias may come before it
            node_path = key.rpartition(".")[0]
            if lora_rank and key.endswith(".weight") and tensor.ndim == 2 and node_path.endswith(lora_targets) \
                    and component(key) in lora_components:
                self.put_module(node_path, LoRANode(node_path + ".", lora_rank, lora_alpha, tuple(tensor.shape)))
        for key, tensor in weights.items():
            tensor = tensor.detach().clone() if copy else tensor.detach()
            self.put(key, nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))

    def put_module(self, path: str, module: nn.Module) -> None:
        *parents, name = path.split(".")
        node: nn.Module = self
        for i, part in enumerate(parents):
            if part not in node._modules:
                node.add_module(part, Tensors(".".join(parents[:i + 1]) + "."))
            node = node._modules[part]
        node.add_module(name, module)

    def blocks(self) -> tuple[nn.ModuleList, nn.ModuleList]:
        return self.get_submodule(VIT_BLOCKS.rstrip(".")), self.get_submodule(TEXT_BLOCKS.rstrip("."))

    def own(self) -> dict[str, Tensor]:
        """The tensors outside the blocks (embeddings, connector, patch embedding, final norm, lm_head)."""
        return self.mapping(skip=(VIT_BLOCKS, TEXT_BLOCKS))

    def encode_images(self, w: dict[str, Tensor], images: Tensor, image_masks: Tensor) -> Tensor:
        """generation.encode_images with each ViT block run as its module: [crops, 729, 588] -> [crops, 196, width]."""
        vit, _ = self.blocks()
        return encode_images(w, self.cfg, images, image_masks, run_block=lambda x, i: vit[i](x))

    def forward(self, batch: dict[str, Tensor], targets: Tensor | None = None) -> Tensor:
        """generation.prefill + decoder.run_decoder + lm_head on a collated batch (processor.collate).

        targets [B, L] (next token id, -100 = not in the loss): returns the SUMMED cross-entropy (the caller
        divides by the global token count); without targets: float32 logits [B, L, vocab]."""
        w = self.own()
        x = embed_tokens(batch["input_ids"], w)  # [B, L, width]
        images, masks = batch["images"], batch["image_masks"]
        if len(images):
            features = self.encode_images(w, images, masks)
            x = add_image_features(x, features, batch["image_input_idx"], batch["crop_batch_index"])
        elif torch.is_grad_enabled():
            # A text-only batch still runs the vision tower once, on one padding crop, times zero: every process
            # then uses every parameter in every step (FSDP's collectives run per block, DDP expects all grads),
            # and AdamW sees a zero gradient, not none, whatever the world size.
            v = self.cfg.vision
            pad = images.new_full((1, v.grid**2, images.shape[-1]), -1.0)
            unused = self.encode_images(w, pad, masks.new_ones(1, v.grid**2)).sum()
            x = x + 0.0 * (unused + w["model.language_model.embedding.new_embedding"].sum())  # image-token rows too
        valid = batch["attention_mask"]  # [B, L] bool, False on the left padding
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        cos, sin = rope_angles(positions, self.cfg.text.head_dim, self.cfg.text.rope_theta)
        mask = attention_mask(valid, x.shape[1])
        for block in self.blocks()[1]:
            x = block(x, cos, sin, valid, mask)
        hidden = rms_norm(x, w["model.language_model.ln_f.weight"], self.cfg.text.norm_eps)
        if targets is None:
            return lm_head(hidden, w)
        keep = targets >= 0  # only the assistant tokens reach the vocabulary projection
        return F.cross_entropy(lm_head(hidden[keep], w), targets[keep], reduction="sum")

    def merged_state(self) -> dict[str, Tensor]:
        """Plain checkpoint tensors with any LoRA merged in (on a module that is not sharded)."""
        with torch.no_grad():
            return {k: w.detach().clone() for k, w in self.mapping().items()}
