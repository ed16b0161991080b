"""decoder.py and VLM.logits: the language path against the official golden logits."""

import pytest
import torch
from conftest import CASES, assert_close, case_id, case_images, golden

from minivlm.core.decoder import embed_tokens


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_logits_at_stored_positions(vlm, case):
    g, name = golden(), case["name"]
    logits = vlm.logits(vlm.preprocess(case["prompt"], case_images(case)))
    assert logits.dtype == torch.float32 and logits.shape == (case["seq_len"], vlm.cfg.text.embedding_size)
    assert_close(logits[g[name + ".logits.positions"]], g[name + ".logits"], "logits")


def test_image_tokens_read_the_additional_rows(vlm):
    w = vlm.weights
    n_base = w["model.language_model.embedding.embedding"].shape[0]
    x = embed_tokens(torch.tensor([[0, n_base - 1, n_base, n_base + 5]]), w)
    assert torch.equal(x[0, 1], w["model.language_model.embedding.embedding"][n_base - 1])
    assert torch.equal(x[0, 2], w["model.language_model.embedding.new_embedding"][0])
    assert torch.equal(x[0, 3], w["model.language_model.embedding.new_embedding"][5])
