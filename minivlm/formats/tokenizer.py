"""Text <-> token ids, through the checkpoint's own `tokenizer.json` (Qwen3's byte-level BPE in the release).

Special ids are never hard-coded: they are looked up by their strings, as the official processor does, so a
checkpoint may put them anywhere. The six image tokens (<im_start>, <im_end>, <im_patch>, <im_col>, <|image|>,
<im_slice>) live in the decoder's extra embedding rows, after the `embedding_size` regular ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from ..core.tokens import IMAGE_PLACEHOLDER, LAYOUT_TOKENS, ImageTokenIds


class TokenizerError(ValueError):
    """The checkpoint's tokenizer files are missing, broken or lack a token minivlm needs."""


def _special_token_name(value) -> str | None:
    """tokenizer_config.json writes special tokens as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class Tokenizer:
    def __init__(self, checkpoint_dir: str | Path):
        root = Path(checkpoint_dir)
        path = self.path = root / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{path} not found: minivlm needs the fast-tokenizer file tokenizer.json")
        try:
            self.hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on a malformed file
            raise TokenizerError(f"{path} could not be read: {e}") from None
        config = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins, as in transformers
            if (root / name).is_file():
                try:
                    config.update(json.loads((root / name).read_text(encoding="utf-8")))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise TokenizerError(f"{root / name} is not valid JSON: {e}") from None
        eos = _special_token_name(config.get("eos_token"))
        bos = _special_token_name(config.get("bos_token"))
        self.eos_id = self.token_id(eos) if eos else None
        bos_id = self.token_id(bos) if bos else None
        # The official processor prepends `bos_token_id or eos_token_id`: Qwen has no BOS, so it is <|endoftext|>.
        self.bos_id = bos_id or self.eos_id
        if self.bos_id is None:
            raise TokenizerError(f"{root}: the tokenizer config names neither a bos_token nor an eos_token")
        self.image_ids = ImageTokenIds(start=self.token_id("<im_start>"), end=self.token_id("<im_end>"),
                                       patch=self.token_id("<im_patch>"), col=self.token_id("<im_col>"))
        self.placeholder_id = self.token_id(IMAGE_PLACEHOLDER)
        self.layout_ids = {self.token_id(t) for t in LAYOUT_TOKENS}

    def token_id(self, token: str) -> int:
        """The one id of a special token; it must encode to exactly one id, as the official processor requires."""
        ids = self.hf.encode(token, add_special_tokens=False).ids
        if len(ids) != 1 or self.hf.token_to_id(token) is None:
            raise TokenizerError(f"{self.path} has no single token {token!r} (it encodes to {ids}); "
                                 "is this a Jina-VLM checkpoint's tokenizer?")
        return ids[0]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens written in it (e.g. <|im_start|>) become their ids."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)
