"""processor.py + tokenizer.py: the official processor's input_ids, image_input_idx and image_masks, exactly."""

import json

import pytest
import torch
from conftest import CASES, FIXTURE_DIR, IMAGE_CASES, case_id, case_images, golden

from minivlm.core.batch import collate
from minivlm.formats.processor import PromptError


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_input_ids_identical(vlm, case):
    batch = vlm.preprocess(case["prompt"], case_images(case))
    assert torch.equal(batch["input_ids"], golden()[case["name"] + ".input_ids"][0])
    assert batch["input_ids"][0] == case["bos_id_prepended"]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=case_id)
def test_image_input_idx_and_masks_identical(vlm, case):
    batch = vlm.preprocess(case["prompt"], case_images(case))
    expected_idx = golden()[case["name"] + ".image_input_idx"][0]
    # Dropped cells: the official sentinel is -131072 after its collation, ours is -1; both are "< 0".
    assert torch.equal(batch["image_input_idx"] < 0, expected_idx < 0)
    kept = expected_idx >= 0
    assert torch.equal(batch["image_input_idx"][kept], expected_idx[kept])
    assert torch.equal(batch["image_masks"], golden()[case["name"] + ".image_masks"][0])
    assert batch["images"].shape == (case["token_counts"]["n_crops"], 729, 588)


def test_special_ids_looked_up_by_string(vlm):
    ids = json.loads((FIXTURE_DIR / "cases.json").read_text())["tokenizer"]
    special = ids["special_token_ids"]
    tok = vlm.tokenizer
    assert (tok.image_ids.start, tok.image_ids.end, tok.image_ids.patch, tok.image_ids.col) == (
        special["<im_start>"], special["<im_end>"], special["<im_patch>"], special["<im_col>"])
    assert tok.placeholder_id == special["<|image|>"]
    assert tok.bos_id == tok.eos_id == ids["eos_token_id"]  # no BOS token: the eos is prepended


def test_placeholder_count_must_match(vlm):
    image = case_images(IMAGE_CASES[0])[0]
    with pytest.raises(PromptError, match=r"2 <\|image\|> placeholder\(s\) but 1 image\(s\)"):
        vlm.preprocess("<|image|> and <|image|>", [image])
    with pytest.raises(PromptError, match=r"1 <\|image\|> placeholder\(s\) but 0 image"):
        vlm.preprocess("<|image|> what?", [])


def test_layout_tokens_typed_by_the_user_are_refused(vlm):
    with pytest.raises(PromptError, match="<im_patch>"):
        vlm.preprocess("what is <im_patch>?", [])


def test_collate_left_pads_and_shifts_indices(vlm):
    case = IMAGE_CASES[0]
    long = vlm.preprocess(case["prompt"] + " and some more words at the end", case_images(case))
    short = vlm.preprocess(case["prompt"], case_images(case))
    batch = collate([long, short])
    pad = len(long["input_ids"]) - len(short["input_ids"])
    assert pad > 0 and not batch["attention_mask"][1, :pad].any() and batch["attention_mask"][1, pad:].all()
    assert torch.equal(batch["input_ids"][1, pad:], short["input_ids"])
    kept = short["image_input_idx"] >= 0
    second = batch["crop_batch_index"] == 1
    assert torch.equal(batch["image_input_idx"][second][kept], short["image_input_idx"][kept] + pad)
