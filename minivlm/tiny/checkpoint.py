"""The embedded demo model's checkpoint: a Jina-VLM in miniature, in the official format.

`minivlm/tiny/minivlm-tiny` has the same files as the released checkpoint (config.json with every field of the
nested JinaVLMConfig, preprocessor_config.json, tokenizer.json, generation_config.json, chat template) and the
same tensor keys; only the sizes are small (`Sizes`). This file writes those files and the initial weights;
`minivlm.tiny.pretrain` and the trainer train them. The geometry tiles like the release's, scaled down: crops
of 168 px (12 x 12 patches of 14 px, 6 x 6 pooled cells) instead of 378 px, 2-patch overlap margins instead of
4, and max_crops 4 (a thumbnail plus 2-4 overlapping tiles for 99% of the task's images).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..formats.chat import CHATML_FALLBACK
from ..formats.weights import expected_shapes
from . import task as tiny_task
from .tokenizer import save_tokenizer_dir, train_tokenizer

EMBED_STD = 0.02
PATCH = 14  # pixels per patch side, as in the release


@dataclass(frozen=True)
class Sizes:
    """What differs from the real model (there: 1152/27/16, 2048/28/16/8, 6144, vocab 151936)."""

    vision_width: int = 64
    vision_layers: int = 4  # vit_layers [-2, -4]: blocks 3 and 1 feed the connector
    vision_heads: int = 2
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    # embedding_size: BPE tokens + <|endoftext|> <|im_start|> <|im_end|>. 640: the task's strings run out of
    # merges at 622, so every answer is one token (at 512, 21 of the 26 answer words take 2-4 tokens).
    vocab: int = 640
    crop: int = 168  # crop side in pixels (real: 378): 12 x 12 patches of 14 px, 6 x 6 pooled cells
    margin: int = 2  # overlap margin in patches per side (real: 4)
    max_crops: int = 4  # tiles at most, besides the thumbnail (real: 12)


# The release's config files (reconstructed: minivlm/configs/jina-vlm/README.md): the demo model takes every field
# from them and overrides only the sizes, so it is the same architecture in miniature.
RELEASE_DIR = Path(__file__).resolve().parents[1] / "configs" / "jina-vlm"
NOT_CONFIG = ("_provenance", "_defaults_filled", "auto_map", "transformers_version")  # notes, and remote-code hooks


def _release(name: str) -> dict:
    data = json.loads((RELEASE_DIR / name).read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if k not in NOT_CONFIG}


def config_json(s: Sizes) -> dict:
    """The release's config.json (every field of the official nested JinaVLMConfig) with `s`'s sizes."""
    cfg = _release("config.json")
    cfg["dtype"] = "float32"  # trained and stored in float32
    vision, text = cfg["vision_config"], cfg["text_config"]
    vision_head, text_head = s.vision_width // s.vision_heads, s.text_width // s.text_heads
    vision.update(hidden_size=s.vision_width, n_layers=s.vision_layers, input_size=[s.crop, s.crop],
                  output_size=s.text_width, vit_layers=[-2, -4])  # blocks 3 and 1 of 4 feed the connector
    vision["block_config"]["attn_config"].update(n_heads=s.vision_heads, head_dim=vision_head)
    vision["block_config"]["ffn_config"]["size"] = 4 * s.vision_width
    connector = vision["vl_connector_config"]
    connector["attn_pooling_config"].update(n_heads=s.vision_heads, head_dim=vision_head)
    connector["mlp_projector_config"]["size"] = 2 * s.text_width
    text.update(hidden_size=s.text_width, n_layers=s.text_layers, num_hidden_layers=s.text_layers,
                embedding_size=s.vocab, vocab_size=s.vocab)
    text["block_config"]["attn_config"].update(n_heads=s.text_heads, n_kv_heads=s.text_kv_heads, head_dim=text_head)
    text["block_config"]["ffn_config"]["size"] = 3 * s.text_width
    return cfg


def preprocessor_json(s: Sizes) -> dict:
    """The release's preprocessor_config.json with `s`'s crop size, margins and tile budget."""
    tokens = -(-(s.crop // PATCH) // 2)  # pooled cells per crop side: 16 patches / 2 = 8
    return dict(_release("preprocessor_config.json"), max_crops=s.max_crops, base_input_size=[s.crop, s.crop],
                patch_size=PATCH, overlap_margins=[s.margin, s.margin], token_length_w=tokens, token_length_h=tokens)


def write_checkpoint_files(out: Path, sizes: Sizes) -> None:
    """Everything but the weights: configs, tokenizer, chat template, generation config, example image."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(sizes.vocab)
    save_tokenizer_dir(tokenizer, out)
    stop = [tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")]
    files = {"config.json": config_json(sizes), "preprocessor_config.json": preprocessor_json(sizes),
             "processor_config.json": {"processor_class": "JinaVLMProcessor", "always_start_with_space": False},
             "generation_config.json": {"bos_token_id": stop[1], "eos_token_id": stop, "pad_token_id": stop[1],
                                        "do_sample": False, "max_new_tokens": 16}}
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "chat_template.jinja").write_text(CHATML_FALLBACK, encoding="utf-8")
    tiny_task.render(example_scene()).save(out / "example.png")


def example_scene() -> tiny_task.Scene:
    """The demo picture, a scene of the task: one green circle (so "What color is the circle?" has one answer),
    a blue square and a red triangle, each 80-90 px (at most 30% of the 300 px side)."""
    shapes = [tiny_task.Shape("circle", "green", (40, 60, 130, 150)), tiny_task.Shape("square", "blue", (200, 30, 280, 110)),
              tiny_task.Shape("triangle", "red", (250, 170, 340, 260))]
    return tiny_task.Scene(400, 300, tiny_task.BACKGROUNDS["white"], shapes)


def sincos_positions(grid: int, width: int) -> torch.Tensor:
    """[grid², width]: half the channels encode the row, half the column, as sines and cosines of several
    frequencies (MAE's initialisation). A random table would start near zero and the ViT would first have to
    learn where each patch is; with this one, neighbouring patches look alike from step one."""
    freqs = 1 / 100 ** (torch.arange(width // 4) / (width // 4))  # [width / 4]
    pos = torch.arange(grid).float()[:, None] * freqs  # [grid, width / 4]
    axis = torch.cat([pos.sin(), pos.cos()], dim=1)  # [grid, width / 2]
    rows, cols = axis[:, None].expand(grid, grid, -1), axis[None, :].expand(grid, grid, -1)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, width)


def dct_patch_filters(width: int, patch: int) -> torch.Tensor:
    """[width, patch² · 3] rows of the 2-D cosine basis (lowest frequencies first), each on one colour channel,
    in the tiler's (dy, dx, channel) order. A random patch embedding starts out mostly measuring colour; this
    one also tells at once where inside the patch the colour sits (an edge, its orientation, a corner), which
    is what telling a circle from a square or a triangle needs."""
    n = math.ceil(width / 3)
    freqs = sorted(((u, v) for u in range(patch) for v in range(patch)), key=lambda f: (f[0] + f[1], f))[:n]
    k = (torch.arange(patch) + 0.5) * math.pi / patch
    rows = []
    for u, v in freqs:
        basis = torch.outer(torch.cos(u * k), torch.cos(v * k))  # [dy, dx]
        basis = basis / basis.norm()
        for c in range(3):
            row = torch.zeros(patch, patch, 3)
            row[..., c] = basis
            rows.append(row.flatten())
    return torch.stack(rows[:width])


def init_weights(cfg, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor `minivlm.load` expects, in float32: matrices ~ N(0, 1/fan_in), residual outputs
    scaled down by depth, norms 1, biases and pad embeddings 0, position table, embeddings, lm_head N(0, 0.02)."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for key, shape in expected_shapes(cfg).items():
        if key.endswith(("lnorm.weight", "ln_f.weight")):
            w = torch.ones(shape)
        elif len(shape) == 1 or key.endswith("pad_embed"):
            w = torch.zeros(shape)
        elif key.endswith("patch_embed.proj.weight"):
            w = dct_patch_filters(shape[0], cfg.vision.patch_size)
        elif key.endswith("pos_embed"):
            w = sincos_positions(cfg.vision.grid, shape[1])
        elif key.endswith("embedding"):
            w = torch.randn(shape, generator=gen) * EMBED_STD
        elif key.endswith("lm_head.weight"):
            w = torch.randn(shape, generator=gen) * 0.02
        else:
            w = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
            if key.endswith(("attn.out.weight", "ffn.down.weight")):
                w /= math.sqrt(2 * max(cfg.vision.n_layers, cfg.text.n_layers))
        weights[key] = w
    return weights
