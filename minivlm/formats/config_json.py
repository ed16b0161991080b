"""Reading the official configuration files into minivlm's config dataclasses (`minivlm.core.config`).

Jina-VLM's `config.json` is a tree of dataclasses (vision_config / text_config, each with a block_config
holding attn_config, ffn_config and lnorm_config; the connector under vision_config.vl_connector_config).
We read only what changes the forward pass into the three small frozen dataclasses of `core.config`, and we *refuse* every value
we do not implement, naming the field, the value and what is supported. A missing key is an error too:
the official class defaults (eps 1e-5, a CLS token, 12 layers...) are not the release's values, so guessing
would silently build a different model. Each field is read through `config_fields.Section`, whose errors name
the file, the field's path and the value.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import ModelConfig, PreprocessorConfig, TextConfig, VisionConfig
from .config_fields import SIZE_LIMITS, ConfigError, Section, check_limit
from .files import read_json


def _check_norm(norm: Section, kind: str, with_bias: bool) -> float:
    norm.expect("type", kind)
    norm.expect("with_affine", True)
    norm.expect("bias", with_bias)
    return norm.number("eps")


def _check_attention(attn: Section, on_heads_qk_norm: bool) -> None:
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


def _check_ffn(ffn: Section, activation: str, gated: bool, bias: bool) -> int:
    ffn.expect("activation_type", activation)
    ffn.expect("gated_activation", gated)
    ffn.expect("bias", bias)
    ffn.expect("inner_lnorm", False, missing_ok=True)
    return ffn.int("size")


def _check_block(block: Section) -> None:
    block.expect("postnorm", False)
    block.expect("attn_lscale_init", None, missing_ok=True)
    block.expect("ffn_lscale_init", None, missing_ok=True)


def _vision_config(vc: Section) -> VisionConfig:
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
    if not (isinstance(image_size, list) and len(image_size) == 2 and image_size[0] == image_size[1]
            and isinstance(image_size[0], int) and not isinstance(image_size[0], bool) and image_size[0] > 0):
        raise ConfigError(f"{vc.where('input_size')} = {image_size!r}: square crops [n, n] expected")
    check_limit(image_size[0], SIZE_LIMITS["crop_size"], vc.where("input_size"))
    patch_size = vc.int("patch_size")
    if image_size[0] % patch_size:
        raise ConfigError(f"{vc.where('input_size')} = {image_size}: not a whole number of "
                          f"{patch_size} px patches")
    n_layers = vc.int("n_layers")
    post_lnorm = vc.expect("post_lnorm", True, False)
    n_hidden_states = n_layers + (1 if post_lnorm else 0)
    vit_layers = vc.get("vit_layers")
    if not isinstance(vit_layers, list) or not vit_layers or \
            not all(isinstance(i, int) and not isinstance(i, bool) for i in vit_layers):
        raise ConfigError(f"{vc.where('vit_layers')} should be a non-empty list of integers, found {vit_layers!r}")
    for i in vit_layers:
        if not -n_hidden_states <= i < n_hidden_states or i % n_hidden_states == n_layers:
            raise ConfigError(f"{vc.where('vit_layers')} = {vit_layers}: index {i} does not name one of the "
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
    for key in ("pooling_h", "pooling_w"):
        if conn.int(key) > image_size[0] // patch_size:
            raise ConfigError(f"{conn.where(key)} = {conn.get(key)}: larger than the crop's "
                              f"{image_size[0] // patch_size} patches")

    return VisionConfig(
        hidden_size=vc.int("hidden_size"), n_layers=n_layers, n_heads=n_heads, head_dim=attn.int("head_dim"),
        mlp_size=mlp_size, norm_eps=eps, crop_size=image_size[0], patch_size=patch_size,
        vit_layers=tuple(vit_layers), n_hidden_states=n_hidden_states,
        pool_h=conn.int("pooling_h"), pool_w=conn.int("pooling_w"), pool_n_heads=pool_heads,
        pool_head_dim=pool_attn.int("head_dim"), projector_size=projector_size, output_size=vc.int("output_size"))


def _text_config(tc: Section) -> TextConfig:
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
        raise ConfigError(f"{attn.where('n_kv_heads')} = {n_kv_heads} does not divide n_heads = {n_heads}")
    return TextConfig(
        hidden_size=tc.int("hidden_size"), n_layers=tc.int("n_layers"), n_heads=n_heads, n_kv_heads=n_kv_heads,
        head_dim=attn.int("head_dim"), mlp_size=mlp_size, norm_eps=eps, rope_theta=tc.number("rope_theta"),
        vocab_size=tc.int("vocab_size"), embedding_size=tc.int("embedding_size"),
        additional_vocab_size=tc.int("additional_vocab_size"), max_sequence_length=tc.int("max_sequence_length"))


def _preprocessor_config(pp: Section, vision: VisionConfig) -> PreprocessorConfig:
    """The tiling settings; the crop geometry it repeats must be the ViT's (the one place minivlm keeps it)."""
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
        raise ConfigError(f"{pp.where('base_input_size')} = {size!r}: a square [n, n] crop size expected")
    if (size[0], pp.int("patch_size")) != (vision.crop_size, vision.patch_size):
        raise ConfigError(f"{pp.file}: crops of {size[0]} px in {pp.get('patch_size')} px patches "
                          f"do not match the ViT's {vision.crop_size} px / {vision.patch_size} px")
    if (pp.int("pooling_h"), pp.int("pooling_w")) != (vision.pool_h, vision.pool_w):
        raise ConfigError(f"{pp.file}: pooling {pp.get('pooling_h')}x{pp.get('pooling_w')} does not match "
                          f"config.json's {vision.pool_h}x{vision.pool_w}")
    for key, expected in zip(("token_length_h", "token_length_w"), vision.pooled_grid):
        if pp.int(key) != expected:
            raise ConfigError(f"{pp.where(key)} = {pp.get(key)}: the crop grid {vision.grid} pooled by "
                              f"{vision.pool_h}x{vision.pool_w} gives {expected}")
    margins = pp.get("overlap_margins")
    if not (isinstance(margins, list) and len(margins) == 2
            and all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in margins)):
        raise ConfigError(f"{pp.where('overlap_margins')} = {margins!r}: two non-negative integers expected")
    if sum(margins) >= vision.grid:
        raise ConfigError(f"{pp.where('overlap_margins')} = {margins}: the margins leave nothing of a crop's "
                          f"{vision.grid} patches")
    min_pixels, max_pixels = pp.int("min_pixels"), pp.int("max_pixels")
    if min_pixels > max_pixels:
        raise ConfigError(f"{pp.file}: min_pixels = {min_pixels} is above max_pixels = {max_pixels}")
    return PreprocessorConfig(max_crops=pp.int("max_crops"), overlap_margins=(margins[0], margins[1]),
                              min_pixels=min_pixels, max_pixels=max_pixels)


def load_config(checkpoint_dir: str | Path) -> ModelConfig:
    """Read config.json, preprocessor_config.json and (optional) processor_config.json of a checkpoint."""
    root = Path(checkpoint_dir)
    config_file, pp_file = root / "config.json", root / "preprocessor_config.json"
    if not config_file.exists():  # something else by that name (a folder, a FIFO): read_json says what
        raise ConfigError(f"{root} is not a checkpoint folder: it has no config.json (a Jina-VLM checkpoint holds "
                          "config.json, preprocessor_config.json, tokenizer.json and *.safetensors)")
    top = Section(read_json(config_file, ConfigError), "", config_file)
    top.expect("model_type", "jvlm")  # another architecture's checkpoint: say so, not "vision_config is missing"
    vision = _vision_config(top.section("vision_config"))
    text = _text_config(top.section("text_config"))
    if vision.output_size != text.hidden_size:
        raise ConfigError(f"{config_file}: vision_config.output_size {vision.output_size} must equal "
                          f"text_config.hidden_size {text.hidden_size}")
    top.expect("tie_word_embeddings", False, missing_ok=True)
    preprocessor = _preprocessor_config(Section(read_json(pp_file, ConfigError), "", pp_file), vision)
    processor_file = root / "processor_config.json"
    space = (Section(read_json(processor_file, ConfigError), "", processor_file).flag("always_start_with_space", False)
             if processor_file.exists() else False)
    return ModelConfig(vision=vision, text=text, preprocessor=preprocessor, always_start_with_space=space)



def generation_stop_ids(checkpoint_dir: str | Path, eos_id: int | None) -> list[int]:
    """The eos ids of generation_config.json when present, else the tokenizer's eos (`eos_id`)."""
    path = Path(checkpoint_dir) / "generation_config.json"
    if path.exists():
        eos = read_json(path, ConfigError).get("eos_token_id")
        is_id = lambda i: isinstance(i, int) and not isinstance(i, bool) and i >= 0  # noqa: E731 (True is an int)
        if is_id(eos):
            return [eos]
        if isinstance(eos, list) and all(is_id(i) for i in eos):
            return eos
        if eos is not None:
            raise ConfigError(f"{path}: eos_token_id should be an id or a list of ids (non-negative "
                              f"integers), found {eos!r}")
    return [eos_id] if eos_id is not None else []
