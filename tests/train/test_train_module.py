"""The trainable module: its forward is minivlm's inference path, LoRA merges exactly, activation checkpointing
changes nothing, and what the trainer saves is an official-format checkpoint that `minivlm.load` reads back."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import minivlm
from minivlm.core.batch import collate
from minivlm.core.config import with_max_crops
from minivlm.train.module import VLMModule
from minivlm.train.state import merge_lora, save_checkpoint
from minivlm.formats.weights import INDEX_FILE

from train_helpers import FIXTURE, data, text_data, train  # noqa: F401,F811 (fixtures)

LORA = dict(lora_rank=4, lora_alpha=8.0, lora_targets=("attn.qkv_w", "attn.out", "ffn.up", "ffn.down"),
            lora_components=("vision", "decoder"))


@pytest.fixture(scope="module")
def vlm():
    model = minivlm.load(FIXTURE)
    model.cfg = with_max_crops(model.cfg, 1)
    return model


@pytest.fixture(scope="module")
def batch(vlm):
    image = FIXTURE / "images" / "rgb_378x378.png"
    samples = [vlm.preprocess("<|image|>Describe this picture.", [image]), vlm.preprocess("Just text, longer here.")]
    return collate(samples)


def with_random_lora(module: VLMModule, seed: int = 0) -> VLMModule:
    """Both LoRA factors drawn from `seed` (B starts at zero in training, which would hide a wrong merge)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith((".lora_A", ".lora_B")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


def vlm_logits(vlm, batch) -> torch.Tensor:
    from minivlm.core.decoder import KVCache, lm_head
    from minivlm.core.generation import prefill

    cache = KVCache.empty(vlm.cfg.text, *batch["input_ids"].shape, torch.float32, "cpu")
    return lm_head(prefill(vlm.weights, vlm.cfg, batch, cache)[0], vlm.weights)


def test_forward_is_minivlms_inference(vlm, batch):
    with torch.no_grad():
        assert torch.equal(VLMModule(vlm.weights, vlm.cfg)(batch), vlm_logits(vlm, batch))


def test_lora_merged_gives_the_logits_of_lora_unmerged(vlm, batch, tmp_path):
    module = with_random_lora(VLMModule(vlm.weights, vlm.cfg, **LORA))
    assert sum(n.endswith(".lora_A") for n, _ in module.named_parameters()) == 4 * (8 + 3)  # 8 ViT + 3 text blocks
    with torch.no_grad():
        unmerged = module(batch)
        merged = merge_lora(module.state_dict(), 8.0 / 4)
        assert not any("lora" in k for k in merged)
        torch.testing.assert_close(VLMModule(merged, vlm.cfg)(batch), unmerged, rtol=1e-5, atol=1e-5)
        assert (unmerged - VLMModule(vlm.weights, vlm.cfg)(batch)).abs().max() > 1e-3  # the adapter matters
    # saved (sharded) and loaded by minivlm.load: the same logits
    save_checkpoint(tmp_path, merged, FIXTURE, vlm.cfg, "float32", max_shard_bytes=200_000)
    assert (tmp_path / INDEX_FILE).is_file() and len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 2
    loaded = minivlm.load(tmp_path)
    loaded.cfg = vlm.cfg
    torch.testing.assert_close(vlm_logits(loaded, batch), unmerged, rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients(vlm, batch):
    text = batch["attention_mask"] & (batch["input_ids"] < vlm.cfg.text.embedding_size)  # image ids have no lm_head row
    targets = torch.where(text, batch["input_ids"], -100).roll(-1, dims=1)
    targets[:, -1] = -100
    grads = []
    for checkpointing in (False, True):
        module = with_random_lora(VLMModule(vlm.weights, vlm.cfg, **LORA))
        for block in [*module.blocks()[0], *module.blocks()[1]]:
            block.checkpointing = checkpointing
        module(batch, targets).backward()
        grads.append({n: p.grad for n, p in module.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-5 * g.abs().max().item(), msg=name)


def test_a_trained_checkpoint_loads_and_gives_the_in_memory_models_logits(vlm, batch, data, tmp_path):
    """After LoRA training, out/ holds an official checkpoint (every key the official loader expects, ViT blocks
    minivlm never runs included) and train_state/params.safetensors the in-memory module, LoRA unmerged."""
    train(tmp_path, "--data", str(data), "--steps", "2", "--batch-size", "2", "--lora-rank", "4")
    params = load_file(tmp_path / "train_state" / "params.safetensors")
    assert any(k.endswith(".lora_A") for k in params)
    module = VLMModule({k: v for k, v in params.items() if "lora" not in k}, vlm.cfg, **{**LORA, "lora_alpha": 16.0})
    module.load_state_dict(params)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert keys == set(load_file(FIXTURE / "model.safetensors"))
    loaded = minivlm.load(tmp_path)
    loaded.cfg = vlm.cfg
    with torch.no_grad():
        torch.testing.assert_close(vlm_logits(loaded, batch), module(batch), rtol=1e-5, atol=1e-5)
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json", "processor_config.json", "losses.csv",
                 "loss_curve.png"):
        assert (tmp_path / name).is_file()
