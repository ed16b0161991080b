"""Bad prompts: placeholders, length, reserved tokens (formats/processor.py)."""

from dataclasses import replace

import pytest
from bad_input import CFG, RGB_378
from conftest import FIXTURE_DIR

from minivlm.core.config import with_max_crops
from minivlm.core.tokens import LAYOUT_TOKENS
from minivlm.formats.processor import PromptError, preprocess
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
