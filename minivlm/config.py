"""Checkpoint configuration: the official nested `config.json` plus the image-processor settings.

Jina-VLM's `config.json` is a tree of dataclasses (vision_config / text_config, each with a block_config
holding attn_config, ffn_config and lnorm_config; the connector under vision_config.vl_connector_config).
We read only what changes the forward pass into three small frozen dataclasses, and we *refuse* every value
we do not implement, naming the field, the value and what is supported. A missing key is an error too:
the official class defaults (eps 1e-5, a CLS token, 12 layers...) are not the release's values, so guessing
would silently build a different model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A checkpoint's configuration is missing a field or asks for something minivlm does not implement."""


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP2 ViT + attention-pooling connector (vision_config in config.json)."""

    hidden_size: int  # 1152 in the release
    n_layers: int  # 27
    n_heads: int  # 16
    head_dim: int  # 72
    mlp_size: int  # 4304
    norm_eps: float  # LayerNorm eps, 1e-6
    image_size: int  # 378: one crop
    patch_size: int  # 14
    vit_layers: tuple[int, ...]  # (-4, -10): indices into [block outputs..., post_lnorm(last)]
    n_hidden_states: int  # n_layers + 1 when post_lnorm is on: the list vit_layers indexes
    pool_h: int  # 2x2 pooling windows
    pool_w: int
    pool_n_heads: int  # 16
    pool_head_dim: int  # 72
    projector_size: int  # 6144: SwiGLU inner width of the projector
    output_size: int  # 2048 = text hidden size

    @property
    def grid(self) -> int:
        """Patches per side of a crop: 378 / 14 = 27."""
        return self.image_size // self.patch_size

    @property
    def pooled_per_crop(self) -> int:
        """Vectors the connector makes per crop: the grid padded to a multiple of the window, 14 x 14 = 196."""
        return -(-self.grid // self.pool_h) * -(-self.grid // self.pool_w)

    @property
    def selected_blocks(self) -> tuple[int, ...]:
        """0-based ViT blocks whose raw outputs feed the connector, in the official order ((24, 18) real)."""
        return tuple(i % self.n_hidden_states for i in self.vit_layers)


@dataclass(frozen=True)
class TextConfig:
    """Qwen3 decoder (text_config in config.json)."""

    hidden_size: int  # 2048
    n_layers: int  # 28
    n_heads: int  # 16
    n_kv_heads: int  # 8
    head_dim: int  # 128
    mlp_size: int  # 6144
    norm_eps: float  # RMSNorm eps, 1e-6
    rope_theta: float  # 1e6
    vocab_size: int  # 151936: ids the tokenizer may produce
    embedding_size: int  # 151936: rows of the base embedding and of lm_head
    additional_vocab_size: int  # 128 extra embedding rows for the image tokens
    max_sequence_length: int  # 40960


@dataclass(frozen=True)
class PreprocessorConfig:
    """The image processor's overlap-and-resize tiling (preprocessor_config.json)."""

    max_crops: int  # 12 tiles at most, plus the thumbnail
    crop_size: int  # 378
    patch_size: int  # 14
    overlap_margins: tuple[int, int]  # (4, 4) patches dropped on each interior side of a tile
    pooling_h: int  # 2
    pooling_w: int  # 2
    min_pixels: int  # 3136
    max_pixels: int  # 1003520


@dataclass(frozen=True)
class ModelConfig:
    vision: VisionConfig
    text: TextConfig
    preprocessor: PreprocessorConfig
    always_start_with_space: bool  # processor_config.json; passed to the chat template


# ---------------------------------------------------------------------------------------------------------
# Reading JSON with clear errors


class _Section:
    """A dict from config.json that knows its path, so every error names `file: a.b.c`."""

    def __init__(self, data: dict, path: str, file: Path):
        self.data, self.path, self.file = data, path, file

    def _where(self, key: str) -> str:
        return f"{self.file}: {self.path + '.' if self.path else ''}{key}"

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise ConfigError(f"{self._where(key)} is missing (minivlm never guesses a default)")
        return self.data[key]

    def section(self, key: str) -> "_Section":
        value = self.get(key)
        if not isinstance(value, dict):
            raise ConfigError(f"{self._where(key)} should be an object, found {value!r}")
        return _Section(value, f"{self.path + '.' if self.path else ''}{key}", self.file)

    def int(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{self._where(key)} should be a positive integer, found {value!r}")
        return value

    def number(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{self._where(key)} should be a positive number, found {value!r}")
        return float(value)

    def expect(self, key: str, *supported: Any, missing_ok: bool = False) -> Any:
        """The value must be one of `supported` (e.g. the pooling type minivlm implements)."""
        if missing_ok and key not in self.data:
            return supported[0]
        value = self.get(key)
        if value not in supported:
            options = " or ".join(repr(s) for s in supported)
            raise ConfigError(f"{self._where(key)} = {value!r} is not supported by minivlm (supported: {options})")
        return value


def read_json(path: Path) -> dict:
    """A JSON object from a checkpoint file; errors name the file."""
    if not path.is_file():
        raise ConfigError(f"{path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # a broken download, or not a text file at all
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} should hold a JSON object")
    return data


def _check_norm(norm: _Section, kind: str, with_bias: bool) -> float:
    norm.expect("type", kind)
    norm.expect("with_affine", True)
    norm.expect("bias", with_bias)
    return norm.number("eps")


def _check_attention(attn: _Section, on_heads_qk_norm: bool) -> None:
    """Refuse attention variants that change the maths (qk norms, clipping, windows, custom scales)."""
    attn.expect("q_lnorm", on_heads_qk_norm)
    attn.expect("k_lnorm", on_heads_qk_norm)
    attn.expect("v_lnorm", False, missing_ok=True)
    attn.expect("o_lnorm", False, missing_ok=True)
    attn.expect("inner_lnorm", False, missing_ok=True)
    attn.expect("clip_qkv", None, missing_ok=True)
    attn.expect("softmax_scale", None, missing_ok=True)
    attn.expect("sliding_window", -1, None, missing_ok=True)
    if on_heads_qk_norm:
        attn.expect("qkv_lnorm_on_heads", True)


def _check_ffn(ffn: _Section, activation: str, gated: bool, bias: bool) -> int:
    ffn.expect("activation_type", activation)
    ffn.expect("gated_activation", gated)
    ffn.expect("bias", bias)
    ffn.expect("inner_lnorm", False, missing_ok=True)
    return ffn.int("size")


def _check_block(block: _Section) -> None:
    block.expect("postnorm", False)
    block.expect("attn_lscale_init", None, missing_ok=True)
    block.expect("ffn_lscale_init", None, missing_ok=True)


def _vision_config(vc: _Section) -> VisionConfig:
    for key, value in [("use_cls_token", False), ("linear_patch_embedding", True), ("patch_embedding_bias", True),
                       ("use_absolute_positional_embeddings", True), ("pre_lnorm", False), ("n_channels", 3)]:
        vc.expect(key, value)
    block = vc.section("block_config")
    _check_block(block)
    attn = block.section("attn_config")
    _check_attention(attn, on_heads_qk_norm=False)
    n_heads = attn.int("n_heads")
    attn.expect("n_kv_heads", None, n_heads)
    eps = _check_norm(block.section("lnorm_config"), "default", with_bias=True)
    mlp_size = _check_ffn(block.section("ffn_config"), "gelu_pytorch_tanh", gated=False, bias=True)

    image_size = vc.get("input_size")
    if image_size not in ([378, 378], (378, 378)) and not (isinstance(image_size, list) and len(image_size) == 2
                                                           and image_size[0] == image_size[1]):
        raise ConfigError(f"{vc._where('input_size')} = {image_size!r}: square crops expected")
    n_layers = vc.int("n_layers")
    post_lnorm = vc.expect("post_lnorm", True, False)
    n_hidden_states = n_layers + (1 if post_lnorm else 0)
    vit_layers = vc.get("vit_layers")
    if not isinstance(vit_layers, list) or not vit_layers or not all(isinstance(i, int) for i in vit_layers):
        raise ConfigError(f"{vc._where('vit_layers')} should be a non-empty list of integers, found {vit_layers!r}")
    for i in vit_layers:
        if not -n_hidden_states <= i < n_hidden_states or i % n_hidden_states == n_layers:
            raise ConfigError(f"{vc._where('vit_layers')} = {vit_layers}: index {i} does not name one of the "
                              f"{n_layers} block outputs (post_lnorm output is not supported)")

    conn = vc.section("vl_connector_config")
    conn.expect("pooling_type", "attention_meanq")
    conn.expect("padding_embed_type", "pad_and_partial_pad")
    conn.expect("projector_type", "mlp")
    pool_attn = conn.section("attn_pooling_config")
    _check_attention(pool_attn, on_heads_qk_norm=False)
    pool_heads = pool_attn.int("n_heads")
    pool_attn.expect("n_kv_heads", None, pool_heads)
    projector_size = _check_ffn(conn.section("mlp_projector_config"), "silu", gated=True, bias=False)

    return VisionConfig(
        hidden_size=vc.int("hidden_size"), n_layers=n_layers, n_heads=n_heads, head_dim=attn.int("head_dim"),
        mlp_size=mlp_size, norm_eps=eps, image_size=image_size[0], patch_size=vc.int("patch_size"),
        vit_layers=tuple(vit_layers), n_hidden_states=n_hidden_states,
        pool_h=conn.int("pooling_h"), pool_w=conn.int("pooling_w"), pool_n_heads=pool_heads,
        pool_head_dim=pool_attn.int("head_dim"), projector_size=projector_size, output_size=vc.int("output_size"))


def _text_config(tc: _Section) -> TextConfig:
    tc.expect("rope", True)
    tc.expect("normalize_input_embeds", False)
    tc.expect("rope_scaling", None, missing_ok=True)
    tc.expect("partial_rotary_factor", 1.0, 1, missing_ok=True)
    block = tc.section("block_config")
    _check_block(block)
    attn = block.section("attn_config")
    _check_attention(attn, on_heads_qk_norm=True)
    attn_eps = _check_norm(attn.section("lnorm_config"), "rms", with_bias=False)
    eps = _check_norm(block.section("lnorm_config"), "rms", with_bias=False)
    if attn_eps != eps:
        raise ConfigError(f"{tc.file}: q/k norm eps {attn_eps} differs from block norm eps {eps}; "
                          "minivlm assumes one eps")
    mlp_size = _check_ffn(block.section("ffn_config"), "silu", gated=True, bias=False)
    n_heads, n_kv_heads = attn.int("n_heads"), attn.int("n_kv_heads")
    if n_heads % n_kv_heads:
        raise ConfigError(f"{attn._where('n_kv_heads')} = {n_kv_heads} does not divide n_heads = {n_heads}")
    return TextConfig(
        hidden_size=tc.int("hidden_size"), n_layers=tc.int("n_layers"), n_heads=n_heads, n_kv_heads=n_kv_heads,
        head_dim=attn.int("head_dim"), mlp_size=mlp_size, norm_eps=eps, rope_theta=tc.number("rope_theta"),
        vocab_size=tc.int("vocab_size"), embedding_size=tc.int("embedding_size"),
        additional_vocab_size=tc.int("additional_vocab_size"), max_sequence_length=tc.int("max_sequence_length"))


def _preprocessor_config(pp: _Section) -> PreprocessorConfig:
    pp.expect("cropping_method", "overlap-and-resize")
    pp.expect("normalization_method", "minmax")
    pp.expect("image_min", -1.0, -1)
    pp.expect("image_max", 1.0, 1)
    pp.expect("interpolation", "bilinear")
    pp.expect("antialias", False)
    pp.expect("resize_in_float32", False)
    pp.expect("preserve_aspect_ratio", False)
    pp.expect("do_resize", True)
    pp.expect("do_convert_rgb", True)
    pp.expect("use_column_tokens", True)
    pp.expect("random_interpolation", False, missing_ok=True)
    size = pp.get("base_input_size")
    if not (isinstance(size, list) and len(size) == 2 and size[0] == size[1] and isinstance(size[0], int)):
        raise ConfigError(f"{pp._where('base_input_size')} = {size!r}: a square [n, n] crop size expected")
    margins = pp.get("overlap_margins")
    if not (isinstance(margins, list) and len(margins) == 2 and all(isinstance(m, int) and m >= 0 for m in margins)):
        raise ConfigError(f"{pp._where('overlap_margins')} = {margins!r}: two non-negative integers expected")
    cfg = PreprocessorConfig(
        max_crops=pp.int("max_crops"), crop_size=size[0], patch_size=pp.int("patch_size"),
        overlap_margins=(margins[0], margins[1]), pooling_h=pp.int("pooling_h"), pooling_w=pp.int("pooling_w"),
        min_pixels=pp.int("min_pixels"), max_pixels=pp.int("max_pixels"))
    grid = cfg.crop_size // cfg.patch_size
    for key, pool in (("token_length_h", cfg.pooling_h), ("token_length_w", cfg.pooling_w)):
        expected = -(-grid // pool)
        if pp.int(key) != expected:
            raise ConfigError(f"{pp._where(key)} = {pp.get(key)}: the crop grid {grid} pooled by {pool} "
                              f"gives {expected}")
    return cfg


def load_config(checkpoint_dir: str | Path) -> ModelConfig:
    """Read config.json, preprocessor_config.json and (optional) processor_config.json of a checkpoint."""
    root = Path(checkpoint_dir)
    config_file, pp_file = root / "config.json", root / "preprocessor_config.json"
    if not config_file.is_file():
        raise ConfigError(f"{root} is not a checkpoint folder: it has no config.json (a Jina-VLM checkpoint holds "
                          "config.json, preprocessor_config.json, tokenizer.json and *.safetensors)")
    top = _Section(read_json(config_file), "", config_file)
    top.expect("model_type", "jvlm")  # another architecture's checkpoint: say so, not "vision_config is missing"
    vision = _vision_config(top.section("vision_config"))
    text = _text_config(top.section("text_config"))
    if vision.output_size != text.hidden_size:
        raise ConfigError(f"{config_file}: vision_config.output_size {vision.output_size} must equal "
                          f"text_config.hidden_size {text.hidden_size}")
    top.expect("tie_word_embeddings", False, missing_ok=True)
    preprocessor = _preprocessor_config(_Section(read_json(pp_file), "", pp_file))
    if (preprocessor.crop_size, preprocessor.patch_size) != (vision.image_size, vision.patch_size):
        raise ConfigError(f"{pp_file}: crops of {preprocessor.crop_size} px in {preprocessor.patch_size} px patches "
                          f"do not match the ViT's {vision.image_size} px / {vision.patch_size} px")
    if (preprocessor.pooling_h, preprocessor.pooling_w) != (vision.pool_h, vision.pool_w):
        raise ConfigError(f"{pp_file}: pooling {preprocessor.pooling_h}x{preprocessor.pooling_w} does not match "
                          f"config.json's {vision.pool_h}x{vision.pool_w}")
    processor_file = root / "processor_config.json"
    space = read_json(processor_file).get("always_start_with_space", False) if processor_file.is_file() else False
    return ModelConfig(vision=vision, text=text, preprocessor=preprocessor, always_start_with_space=bool(space))


def with_max_crops(cfg: ModelConfig, max_crops: int) -> ModelConfig:
    """The same model with another tile budget: fewer crops give fewer image tokens (and less detail)."""
    if isinstance(max_crops, bool) or not isinstance(max_crops, int) or max_crops < 1:
        raise ConfigError(f"max_crops must be a positive integer, got {max_crops!r}")
    return replace(cfg, preprocessor=replace(cfg.preprocessor, max_crops=max_crops))
