"""A tiny Qwen2-style byte-level BPE tokenizer for the embedded demo model (see `minivlm.tiny.task`).

It mirrors the pipeline of the release tokenizer (and of `tests/fixtures/jvlm-tiny/tokenizer.json`):
NFC normalizer, Qwen2's Split regex then ByteLevel(add_prefix_space=False, use_regex=False), ByteLevel
post-processor and decoder. The merges are trained on every question and answer of the task plus the chat
template's text pieces, so task strings take a handful of tokens; all 256 byte symbols are in the base
alphabet, so any text still encodes.

Id layout (what the model's embedding expects), for `vocab_size` = V = the config's embedding_size:
  0 .. V-4      regular BPE tokens (if the small corpus runs out of merges first, the tail is filled with
                unreachable `<|reserved_k|>` entries so V is exactly as requested),
  V-3 .. V-1    <|endoftext|>, <|im_start|>, <|im_end|>,
  V+0 .. V+5    <im_start>, <im_end>, <im_patch>, <im_col>, <|image|>, <im_slice> (the model's
                "additional" embedding rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from .task import all_texts

# Qwen2's pre-tokenization regex, verbatim from the release tokenizer.json.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
TEXT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
IMAGE_SPECIALS = ("<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<|image|>", "<im_slice>")
# Text between the special tokens of the chat template:
# "<|im_start|>user\n<|image|>Q<|im_end|>\n<|im_start|>assistant\nA<|im_end|>".
CHAT_PIECES = ("user\n", "assistant\n", "\n")


def _empty_tokenizer(model: models.Model) -> Tokenizer:
    """The Qwen2 pipeline around a BPE model (serialises like the fixture's tokenizer.json)."""
    tok = Tokenizer(model)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def corpus() -> list[str]:
    """Training text: every task question and answer in all languages, plus the chat template pieces."""
    return all_texts() + list(CHAT_PIECES)


def _pad_vocab(tok: Tokenizer, n_regular: int) -> Tokenizer:
    """Fill the BPE vocab up to n_regular with entries no merge produces, so special ids land where asked."""
    state = json.loads(tok.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    for k in range(n_regular - len(vocab)):
        vocab[f"<|reserved_{k}|>"] = len(vocab)
    return Tokenizer.from_str(json.dumps(state))


def train_tokenizer(vocab_size: int, out_path: str | Path | None = None) -> Tokenizer:
    """Train the BPE; `vocab_size` counts regular tokens plus the three text specials (= embedding_size).

    Saves tokenizer.json to `out_path` when given. Deterministic: same vocab_size, same file.
    """
    n_regular = vocab_size - len(TEXT_SPECIALS)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if n_regular < len(alphabet):
        raise ValueError(f"vocab_size {vocab_size} < {len(alphabet) + len(TEXT_SPECIALS)} (256 bytes + 3 specials)")
    tok = _empty_tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=n_regular, initial_alphabet=alphabet, special_tokens=[],
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if tok.get_vocab_size() < n_regular:  # the corpus is small: merges run out at 619 regular tokens
        tok = _pad_vocab(tok, n_regular)
    # Added after training so they take the ids right after the regular tokens, in this order.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, single_word=False, lstrip=False,
                                       rstrip=False) for t in TEXT_SPECIALS + IMAGE_SPECIALS])
    if out_path is not None:
        tok.save(str(out_path))
    return tok


def special_tokens_map() -> dict[str, Any]:
    """special_tokens_map.json, as in the fixture."""
    return {"additional_special_tokens": list(TEXT_SPECIALS[1:] + IMAGE_SPECIALS),
            "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}


def tokenizer_config(tokenizer: Tokenizer, model_max_length: int = 131072) -> dict[str, Any]:
    """tokenizer_config.json for `tokenizer`, key for key like the fixture's (Qwen2Tokenizer, no BOS)."""
    decoder = {str(tokenizer.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                               "single_word": False, "special": True}
               for t in TEXT_SPECIALS + IMAGE_SPECIALS}
    return {
        "added_tokens_decoder": decoder,
        "additional_special_tokens": special_tokens_map()["additional_special_tokens"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "extra_special_tokens": {},
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
        "add_prefix_space": False,
        "errors": "replace",
    }


def save_tokenizer_dir(tokenizer: Tokenizer, directory: str | Path, model_max_length: int = 131072) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, as a checkpoint dir holds them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    for name, content in (("tokenizer_config.json", tokenizer_config(tokenizer, model_max_length)),
                          ("special_tokens_map.json", special_tokens_map())):
        (directory / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
