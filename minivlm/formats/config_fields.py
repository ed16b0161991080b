"""The fields of a checkpoint's configuration files, read with errors that name the file, the field and the value.

`Section` is one object of config.json (or preprocessor_config.json) that knows its path in the file, so an error
reads `config.json: vision_config.block_config.attn_config.n_heads should be a positive integer, found 0`. Sizes
and numbers are checked against bounds far above any released model (SIZE_LIMITS, NUMBER_LIMITS), so a damaged
or hostile file is refused while it is read. `minivlm.formats.config_json` reads the model's fields with it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..core.config import MAX_CROPS_LIMIT


class ConfigError(ValueError):
    """A checkpoint's configuration is missing a field or asks for something minivlm does not implement."""


# ---------------------------------------------------------------------------------------------------------
# Sanity bounds
#
# Sizes past these are not a model but a damaged or hostile file: refused while reading, they never reach code
# that enumerates layers or allocates per unit (10^9 layers would hang building the list of expected tensors).
# Each bound is far above any released model (the largest known in brackets), so no real checkpoint is refused.
SIZE_LIMITS = {
    "n_layers": 1024,  # layers of one stack [126: Llama-3.1-405B; ViTs 27-80]
    "hidden_size": 65_536,  # [16,384: Llama-3.1-405B]
    "output_size": 65_536,  # the connector's output = the decoder's width
    "size": 262_144,  # MLP inner width [53,248: Llama-3.1-405B]
    "n_heads": 1024,  # [128]
    "n_kv_heads": 1024,
    "head_dim": 1024,  # [256: Gemma]
    "vocab_size": 4_194_304,  # [262,144: Gemma 3]
    "embedding_size": 4_194_304,
    "additional_vocab_size": 65_536,  # [128: Jina-VLM's image tokens]
    "max_sequence_length": 16_777_216,  # [10M: Llama 4 Scout]
    "patch_size": 1024,  # [14-16]
    "crop_size": 4096,  # [378; 896 in the largest ViT inputs]
    "pooling_h": 64, "pooling_w": 64,  # [2]
    "token_length_h": 4096, "token_length_w": 4096,  # pooled cells per crop side [14]
    "max_crops": MAX_CROPS_LIMIT,  # the tiler's own limit (core/config.py says why)
    "min_pixels": 1 << 26, "max_pixels": 1 << 26,  # 67 megapixels = 8192 x 8192 [1,003,520]: the tiler's float
    #                                                resize holds 12 bytes per pixel
}
NUMBER_LIMITS = {
    "eps": 0.1,  # a norm's epsilon [1e-6 .. 1e-5]
    "rope_theta": 1e12,  # RoPE base [1e6; 5e8 in long-context models]
}


class Section:
    """A dict from config.json that knows its path, so every error names `file: a.b.c`."""

    def __init__(self, data: dict, path: str, file: Path):
        self.data, self.path, self.file = data, path, file

    def where(self, key: str) -> str:
        return f"{self.file}: {self.path + '.' if self.path else ''}{key}"

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise ConfigError(f"{self.where(key)} is missing (minivlm never guesses a default)")
        return self.data[key]

    def section(self, key: str) -> "Section":
        value = self.get(key)
        if not isinstance(value, dict):
            raise ConfigError(f"{self.where(key)} should be an object, found {value!r}")
        return Section(value, f"{self.path + '.' if self.path else ''}{key}", self.file)

    def int(self, key: str) -> int:
        """A positive integer within SIZE_LIMITS[key]."""
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{self.where(key)} should be a positive integer, found {value!r}")
        check_limit(value, SIZE_LIMITS[key], self.where(key))
        return value

    def number(self, key: str) -> float:
        """A positive finite number within NUMBER_LIMITS[key]."""
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{self.where(key)} should be a positive number, found {value!r}")
        check_limit(value, NUMBER_LIMITS[key], self.where(key))
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        """A JSON true/false (the string "false" is not one: bool("false") would be True)."""
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)} should be true or false, found {value!r}")
        return value

    def expect(self, key: str, *supported: Any, missing_ok: bool = False) -> Any:
        """The value must be one of `supported` (e.g. the pooling type minivlm implements)."""
        if missing_ok and key not in self.data:
            return supported[0]
        value = self.get(key)
        if value not in supported:
            options = " or ".join(repr(s) for s in supported)
            raise ConfigError(f"{self.where(key)} = {value!r} is not supported by minivlm (supported: {options})")
        return value


def check_limit(value: float, limit: float, where: str) -> None:
    if value > limit:
        raise ConfigError(f"{where} = {value!r} is beyond any real model (at most {limit:,}); "
                          "a damaged or hand-edited config?")
