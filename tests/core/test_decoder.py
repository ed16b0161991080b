"""decoder.py and VLM.logits: the language path against the official golden logits."""

import pytest
import torch
from conftest import CASES, assert_close, case_id, case_images, golden

from minivlm.core.batch import collate
from minivlm.core.decoder import KVCache, embed_tokens
from minivlm.core.generation import prefill


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


@pytest.mark.parametrize("names", [("landscape_1176x910",), ("text_only", "two_images")], ids=["alone", "left-padded"])
def test_last_only_prefill_is_the_full_prefills_last_row(vlm, names):
    """prefill(last_only=True), as generation runs it: the last row of the full prefill (the last block computes
    only that row's attention and MLP), and the same keys and values in the cache. One prompt (causal attention,
    no mask) and two of different lengths (left padding: the masked path)."""
    chosen = [c for c in CASES if c["name"] in names]
    batch = collate([vlm.preprocess(c["prompt"], case_images(c)) for c in chosen])
    caches = [KVCache.empty(vlm.cfg.text, len(chosen), batch["input_ids"].shape[1], torch.float32, "cpu")
              for _ in range(2)]
    full, positions = prefill(vlm.weights, vlm.cfg, batch, caches[0])
    last, last_positions = prefill(vlm.weights, vlm.cfg, batch, caches[1], last_only=True)
    assert last.shape == (len(chosen), 1, full.shape[-1]) and torch.equal(positions, last_positions)
    # The same arithmetic on fewer rows: equal up to the order of float32 sums in the products.
    assert_close(last[:, 0], full[:, -1], "last row")
    for layer in range(vlm.cfg.text.n_layers):
        assert torch.equal(caches[1].keys[layer], caches[0].keys[layer])
        assert torch.equal(caches[1].values[layer], caches[0].values[layer])
