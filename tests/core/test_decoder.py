"""decoder.py and VLM.logits: the language path against the official golden logits."""

import pytest
import torch
from conftest import CASES, assert_close, case_id, case_images, golden

from minivlm.core.decoder import KVCache, embed_tokens


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


def test_kv_cache_grows_by_half_and_keeps_what_it_holds(vlm):
    """KVCache.reserve: no growth while the room suffices; else at least half the capacity more (or exactly what is
    asked, when more), the stored keys, values and valid flags unchanged."""
    cfg = vlm.cfg.text
    cache = KVCache.empty(cfg, 1, 10, torch.float32, "cpu")
    for layer in range(cfg.n_layers):
        cache.keys[layer].normal_(), cache.values[layer].normal_()
    cache.valid[:, :7] = True
    before = ([k.clone() for k in cache.keys], [v.clone() for v in cache.values])
    cache.reserve(10)
    assert cache.capacity == 10
    cache.reserve(11)
    assert cache.capacity == 15  # 10 + 10 // 2, not 20
    cache.reserve(40)
    assert cache.capacity == 40  # more than half asked: exactly that
    for layer in range(cfg.n_layers):
        assert cache.keys[layer].shape[2] == cache.values[layer].shape[2] == 40
        assert torch.equal(cache.keys[layer][:, :, :10], before[0][layer])
        assert torch.equal(cache.values[layer][:, :, :10], before[1][layer])
        assert not cache.keys[layer][:, :, 10:].any() and not cache.values[layer][:, :, 10:].any()
    assert cache.valid[:, :7].all() and not cache.valid[:, 7:].any()
