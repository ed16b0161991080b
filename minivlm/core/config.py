"""The model's configuration as three small frozen dataclasses: what changes the forward pass, nothing else.

Where it sits: read by every component (tiler, ViT, pooler, decoder). Mirrors the official `JinaVLMVisionConfig`,
`JinaVLMTextConfig` and `JinaVLMConfig` (configuration_jvlm.py) and the settings of `JinaVLMImageProcessor`
(image_processing_jvlm.py), reduced to what changes the forward pass. It is filled from the official files
(config.json, preprocessor_config.json) by `minivlm.formats.config_json`, which refuses every value minivlm does
not implement; here are only the facts, each under one name. The crop geometry (crop size, patch size, pooling
window) belongs to the vision model: the tiler cuts the crops the ViT was trained on, so it reads them there.
The values in the comments are the release's (jinaai/jina-vlm).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# The tiling choice compares every i x j grid with i * j <= max_crops, and one ViT pass costs a crop's worth of
# compute per tile: 1,024 tiles (a 16,000 px square photo at full detail) is far beyond anything a VLM is run
# with (the release uses 12), and it keeps the tiler's search and memory small whatever a file or flag says.
MAX_CROPS_LIMIT = 1024


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP2 ViT + attention-pooling connector (vision_config in config.json)."""

    hidden_size: int  # 1152
    n_layers: int  # 27
    n_heads: int  # 16
    head_dim: int  # 72
    mlp_size: int  # 4304
    norm_eps: float  # LayerNorm eps, 1e-6
    crop_size: int  # 378: the side of one crop in pixels (config.json's input_size)
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
        return self.crop_size // self.patch_size

    @property
    def pooled_grid(self) -> tuple[int, int]:
        """Pooled cells per crop side, (14, 14): the 27-patch grid padded up to a multiple of the window."""
        return -(-self.grid // self.pool_h), -(-self.grid // self.pool_w)

    @property
    def pooled_per_crop(self) -> int:
        """Vectors the connector makes per crop: 14 x 14 = 196."""
        rows, cols = self.pooled_grid
        return rows * cols

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
    """How the tiler covers an image with crops (preprocessor_config.json); the crop itself is VisionConfig's."""

    max_crops: int  # 12 tiles at most, plus the thumbnail
    overlap_margins: tuple[int, int]  # (4, 4) patches dropped on each interior side of a tile
    min_pixels: int  # 3136
    max_pixels: int  # 1003520


@dataclass(frozen=True)
class ModelConfig:
    vision: VisionConfig
    text: TextConfig
    preprocessor: PreprocessorConfig
    always_start_with_space: bool  # processor_config.json; passed to the chat template


def with_max_crops(cfg: ModelConfig, max_crops: int) -> ModelConfig:
    """The same model with another tile budget: fewer crops give fewer image tokens (and less detail)."""
    if isinstance(max_crops, bool) or not isinstance(max_crops, int) or not 1 <= max_crops <= MAX_CROPS_LIMIT:
        raise ValueError(f"max_crops must be an integer from 1 to {MAX_CROPS_LIMIT}, got {max_crops!r}")
    return replace(cfg, preprocessor=replace(cfg.preprocessor, max_crops=max_crops))
