"""The embedded demo model's checkpoint: a Jina-VLM in miniature, in the official format.

`minivlm/tiny/minivlm-tiny` has the same files as the released checkpoint (config.json with every field of the
nested JinaVLMConfig, preprocessor_config.json, tokenizer.json, generation_config.json, chat template) and the
same tensor keys; only the sizes are small (`Sizes`). This file writes those files and the initial weights;
`minivlm.tiny.train` trains them. By default crops are 224 px (16 x 16 patches of 14 px, 8 x 8 pooled cells)
instead of 378 px, with 2-patch overlap margins instead of 4, and max_crops 1 (a thumbnail plus one tile).
The geometry proposed for issue #17's tiling model is `Sizes(crop=168, margin=2, max_crops=4)`: 12 x 12
patches, and 99% of the task's images cut into 2-4 overlapping tiles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

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
    crop: int = 224  # crop side in pixels (real: 378): 16 x 16 patches of 14 px
    margin: int = 2  # overlap margin in patches per side (real: 4)
    max_crops: int = 1  # tiles at most, besides the thumbnail (real: 12)


def _attn(heads: int, kv_heads: int | None, head_dim: int, qk_norm: bool, bias: bool, norm_bias, eps) -> dict:
    norm = {"bias": norm_bias, "eps": eps, "type": "rms" if qk_norm else "default", "with_affine": True}
    return {"clip_qkv": None, "dropout": 0.0, "fp32": False, "head_dim": head_dim, "inner_lnorm": False,
            "k_bias": bias, "k_lnorm": qk_norm, "lnorm_config": norm, "n_heads": heads, "n_kv_heads": kv_heads,
            "o_bias": bias, "o_lnorm": False, "q_bias": bias, "q_lnorm": qk_norm, "qkv_lnorm_on_heads": qk_norm,
            "sliding_window": -1, "softmax_scale": None, "v_bias": bias, "v_lnorm": False}


def _ffn(size: int, activation: str, gated: bool, bias: bool) -> dict:
    return {"activation_type": activation, "bias": bias, "gated_activation": gated, "inner_lnorm": False,
            "lnorm_config": {"bias": None, "eps": None, "type": "default", "with_affine": True}, "ratio": 4,
            "size": size}


def _block(attn: dict, ffn: dict, norm: str) -> dict:
    return {"attn_config": attn, "attn_lscale_init": None, "ffn_config": ffn, "ffn_lscale_init": None,
            "lnorm_config": {"bias": norm == "default", "eps": 1e-6, "type": norm, "with_affine": True},
            "postnorm": False, "residual_dropout": 0.0, "residual_path_dropout": 0.0,
            "residual_response_dropout": 0.0}


def config_json(s: Sizes) -> dict:
    """config.json with every field of the official nested JinaVLMConfig; only the sizes are small."""
    vh, th = s.vision_width // s.vision_heads, s.text_width // s.text_heads
    vision = {
        "block_config": _block(_attn(s.vision_heads, None, vh, False, True, True, 1e-6),
                               _ffn(4 * s.vision_width, "gelu_pytorch_tanh", False, True), "default"),
        "hidden_size": s.vision_width, "input_size": [s.crop, s.crop], "linear_patch_embedding": True, "model_type": "jvlm",
        "n_channels": 3, "n_layers": s.vision_layers, "output_size": s.text_width, "patch_dropout": 0.0,
        "patch_embedding_bias": True, "patch_size": PATCH, "positional_interpolation": "bicubic", "post_lnorm": True,
        "pre_lnorm": False, "use_absolute_positional_embeddings": True, "use_cls_token": False,
        "vit_layers": [-2, -4],
        "vl_connector_config": {
            "attn_pooling_config": _attn(s.vision_heads, None, vh, False, True, None, None), "feature_dropout": 0.0,
            "mlp_projector_config": _ffn(2 * s.text_width, "silu", True, False),
            "padding_embed_type": "pad_and_partial_pad", "pooling_h": 2, "pooling_type": "attention_meanq",
            "pooling_w": 2, "projector_dropout": 0.0, "projector_type": "mlp", "spatial_merge_size": 2}}
    text = {
        "additional_vocab_size": 128,
        "block_config": _block(_attn(s.text_heads, s.text_kv_heads, th, True, False, False, 1e-6),
                               _ffn(3 * s.text_width, "silu", True, False), "rms"),
        "embedding_dropout": 0.0, "embedding_size": s.vocab, "hidden_size": s.text_width,
        "max_position_embeddings": None, "max_sequence_length": 40960, "model_type": "jvlm",
        "n_layers": s.text_layers, "normalize_input_embeds": False, "num_hidden_layers": s.text_layers,
        "partial_rotary_factor": 1.0, "rope": True, "rope_scaling": None, "rope_theta": 1000000,
        "tie_word_embeddings": False, "vocab_size": s.vocab}
    return {"architectures": ["JinaVLMForConditionalGeneration"], "dtype": "float32", "model_type": "jvlm",
            "text_config": text, "tie_word_embeddings": False, "vision_config": vision}


RELEASE_PREPROCESSOR = {  # the released preprocessor_config.json, less auto_map
    "image_processor_type": "JinaVLMImageProcessor", "processor_class": "JinaVLMProcessor", "do_resize": True,
    "size": {"shortest_edge": 3136, "longest_edge": 1003520}, "min_pixels": 3136, "max_pixels": 1003520,
    "do_convert_rgb": True, "cropping_method": "overlap-and-resize", "normalization_method": "minmax",
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_min": -1.0, "image_max": 1.0, "interpolation": "bilinear", "random_interpolation": False,
    "antialias": False, "preserve_aspect_ratio": False, "resize_in_float32": False,
    "max_crops": 12,
    "base_input_size": [378, 378], "patch_size": 14, "overlap_margins": [4, 4], "use_column_tokens": True,
    "pooling_w": 2, "pooling_h": 2, "token_length_w": 14, "token_length_h": 14, "padding_mask": False,
    "padding_value": 0.0}


def preprocessor_json(s: Sizes) -> dict:
    """preprocessor_config.json: the release's with `s`'s crop size, margins and max_crops (with max_crops 1,
    the thumbnail plus one tile: the same pixels at this size)."""
    tokens = -(-(s.crop // PATCH) // 2)  # pooled cells per crop side: 16 patches / 2 = 8
    return dict(RELEASE_PREPROCESSOR, max_crops=s.max_crops, base_input_size=[s.crop, s.crop], patch_size=PATCH,
                overlap_margins=[s.margin, s.margin], token_length_w=tokens, token_length_h=tokens)


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


def save_weights(weights: dict[str, torch.Tensor], out: Path) -> None:
    save_file({k: w.detach().cpu().contiguous() for k, w in weights.items()}, str(Path(out) / "model.safetensors"),
              metadata={"format": "pt"})

