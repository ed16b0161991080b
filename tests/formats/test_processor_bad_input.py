"""Bad prompts: placeholders, length, reserved tokens (formats/processor.py)."""

import time
from dataclasses import replace

import pytest
from bad_input import CFG, RGB_378
from conftest import FIXTURE_DIR

from minivlm.core.config import with_max_crops
from minivlm.core.tokens import LAYOUT_TOKENS
from minivlm.formats.processor import PromptError, check_prompt_length, preprocess
from minivlm.formats.tokenizer import TokenizerError


def test_fewer_placeholders_than_images(vlm):
    with pytest.raises(PromptError, match=r"1 <\|image\|> placeholder\(s\) but 2 image\(s\)"):
        vlm.preprocess("<|image|> compare", [RGB_378, RGB_378])


def test_too_long_says_by_how_much_and_what_to_reduce(vlm):
    image = FIXTURE_DIR / "images" / "rgb_1176x910.png"  # 1744 image tokens at max_crops 12, 424 at 1
    n = len(preprocess("<|image|>Describe.", [image], vlm.tokenizer, CFG)["input_ids"])
    cfg = replace(CFG, text=replace(CFG.text, max_sequence_length=1000))
    with pytest.raises(PromptError) as err:
        preprocess("<|image|>Describe.", [image], vlm.tokenizer, cfg)
    assert (f"is {n} tokens long (1744 for 1 image(s), {n - 1744} text), {n - 1000} over the model's maximum of "
            "1000; use fewer or smaller images, fewer crops per image (max_crops is 12: --max-crops N"
            ) in str(err.value)
    fewer_crops = preprocess("<|image|>Describe.", [image], vlm.tokenizer, with_max_crops(cfg, 1))
    assert len(fewer_crops["input_ids"]) == n - 1744 + 424


@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_prompt(vlm, text):
    with pytest.raises(PromptError, match="the prompt is empty and there is no image"):
        vlm.preprocess(text, [])
    batch = vlm.preprocess(text, [RGB_378])  # an image alone is a fine request
    assert batch["input_ids"][0] == vlm.tokenizer.bos_id and len(batch["images"]) == 2


@pytest.mark.parametrize("token", LAYOUT_TOKENS)
def test_layout_tokens_typed_by_the_user(vlm, token):
    with pytest.raises(PromptError, match=f"contains the image layout token\\(s\\) {token}"):
        vlm.preprocess(f"what does {token} mean?", [])


def test_token_without_an_embedding_row(vlm):
    cfg = replace(CFG, text=replace(CFG.text, embedding_size=100, additional_vocab_size=0))
    with pytest.raises(TokenizerError, match=r"has no embedding row \(the model has 100\)"):
        preprocess("hello there", [], vlm.tokenizer, cfg)


# -- text that is not text, or far too long ------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    (None, "the prompt must be a str, got NoneType"),
    (b"What is this?", "the prompt must be a str, got bytes; decode it first"),
    (["What is this?"], "the prompt must be a str, got list"),
    ("caf\udce9", "the prompt is not valid Unicode text: character 3 is a lone surrogate ('\\udce9')"),
    ("\ud800 hi", "character 0 is a lone surrogate"),
])
def test_prompts_that_are_not_valid_text(vlm, text, message):
    with pytest.raises(PromptError) as err:
        vlm.generate(text, max_new_tokens=1)
    assert message in str(err.value)


def test_ten_million_spaces_refused_before_tokenizing(vlm):
    """The tokenizer library panics on this (a Rust PanicException, which `except Exception` misses)."""
    start = time.perf_counter()
    with pytest.raises(PromptError, match="the prompt is 10,000,000 characters long: more than the model's maximum "
                                          "of 40,960 tokens could hold"):
        vlm.generate("x" + " " * 9_999_999, max_new_tokens=1)
    assert time.perf_counter() - start < 1


def test_the_length_bound_refuses_only_what_cannot_fit(vlm):
    cfg = replace(CFG, text=replace(CFG.text, max_sequence_length=10))
    longest = vlm.tokenizer.max_token_chars  # no token covers more characters than this
    assert longest == max(len(t) for t in vlm.tokenizer.hf.get_vocab())
    check_prompt_length("x" * (10 * longest), vlm.tokenizer, cfg)
    with pytest.raises(PromptError, match=f"at most {10 * longest} characters"):
        check_prompt_length("x" * (10 * longest + 1), vlm.tokenizer, cfg)


def test_a_tokenizer_panic_becomes_an_error(vlm, monkeypatch):
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})  # what pyo3 raises

    def encode(*args, **kwargs):
        raise panic("Onig: Regex search error: retry-limit-in-match over")
    monkeypatch.setattr(vlm.tokenizer, "hf", type("Panicking", (), {"encode": staticmethod(encode)})())
    with pytest.raises(TokenizerError, match="the tokenizer library failed on this text of 2 characters "
                                             r"\(Onig: Regex search error"):
        vlm.tokenizer.encode("hi")
    with pytest.raises(KeyboardInterrupt):  # other BaseExceptions pass through
        monkeypatch.setattr(vlm.tokenizer.hf, "encode", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        vlm.tokenizer.encode("hi")
