"""flops.py: the prompt's arithmetic, by hand on the tiny fixture config and against the release's known totals."""

import pytest
from conftest import FIXTURE_DIR

from minivlm.formats.config_json import load_config
from minivlm.tools import bench
from minivlm.tools.flops import prompt_flops, prompt_products
from minivlm.tools.random_init import random_init_batch, synthetic_image


def test_fixture_config_by_hand():
    """jvlm-tiny: ViT width 32 (4 heads of 8, MLP 64), blocks 0-7 run (it reads blocks 7 and 1 of 10); connector
    2 x 32 = 64 features in, pooling 4 heads of 8, projector 96 -> 64; decoder width 64, 3 layers, 4 query heads and
    2 kv heads of 16, MLP 128, 512 LM-head rows. 2 crops of 729 patches, 10 prompt tokens."""
    f = prompt_flops(load_config(FIXTURE_DIR), crops=2, tokens=10)
    patches = 2 * 729
    assert f.vit.matmul == (2 * patches * 588 * 32  # patch embedding
                            + 8 * 2 * patches * (32 * 96 + 32 * 32 + 32 * 64 + 64 * 32))  # qkv, out, up, down
    assert f.vit.attention == 8 * 2 * 2 * (2 * 729 * 729) * 4 * 8  # blocks x (QKᵀ, PV) x 2 FLOP x pairs x heads x D
    windows = 2 * 196
    assert f.connector.matmul == 2 * (windows * 64 * 32  # query
                                      + 4 * windows * 64 * 64  # keys and values of the 4 cells
                                      + windows * 32 * 32  # out
                                      + windows * 32 * 192  # projector up (value and gate)
                                      + windows * 96 * 64)  # projector down
    assert f.connector.attention == 2 * 2 * (4 * windows) * 4 * 8
    # qkv in all 3 blocks; out, up, down over the 10 rows in 2, over the last row in the last; the LM head's row
    assert f.prefill.matmul == (3 * 2 * 10 * 64 * 128 + 2 * 2 * 10 * (64 * 64 + 64 * 256 + 128 * 64)
                                + 2 * 1 * (64 * 64 + 64 * 256 + 128 * 64) + 2 * 64 * 512)
    # causal: 1 + 2 + ... + 10 = 55 (query, key) pairs in 2 blocks; the last block's last query over 10 keys
    assert f.prefill.attention == 2 * 2 * 2 * 55 * 4 * 16 + 2 * 2 * 10 * 4 * 16
    assert f.vision.total == f.vit.total + f.connector.total
    assert f.ttft.total == f.vision.total + f.prefill.total


def test_release_config_reproduces_the_known_totals():
    """Issue #15's figures for the 1176x910 benchmark image: ViT 7.2 T of matrix products + 0.8 T of attention
    (25 of the 27 blocks run: all 27 would be 7.8 T + 0.86 T), prefill 5.0 + 0.36 T over 1,774 tokens, of which
    the last block's out product, MLP and attention for 1,773 of its rows are skipped (2 x 1,773 x 2048 x (2048 +
    12288 + 6144) = 0.149 T of products; 4 x 16 x 128 x (1,774 x 1,775 / 2 - 1,774) = 0.0129 T of attention)."""
    cfg = load_config(bench.REAL_CONFIG)
    batch = random_init_batch(cfg, synthetic_image(1176, 910))
    crops, tokens = len(batch["images"]), batch["input_ids"].shape[1]
    assert (crops, tokens) == (13, 1774)
    f = prompt_flops(cfg, crops, tokens)
    assert f.vit.matmul / 1e12 == pytest.approx(7.2, rel=0.01)
    assert f.vit.attention / 1e12 == pytest.approx(0.8, rel=0.01)
    assert (f.prefill.matmul + 0.149e12) / 1e12 == pytest.approx(5.0, rel=0.01)
    assert (f.prefill.attention + 0.0129e12) / 1e12 == pytest.approx(0.36, rel=0.01)
    assert f.connector.total / 1e12 == pytest.approx(0.265, rel=0.01)  # not in the sum: 2 % of the total
    assert f.ttft.total / 1e12 == pytest.approx(13.49, rel=0.001)
    # the shapes the bench times alone are exactly the products counted
    vision, prefill = prompt_products(cfg, crops, tokens)
    assert sum(p.flop for p in vision) == f.vision.matmul and sum(p.flop for p in prefill) == f.prefill.matmul
    assert (vision[1].rows, vision[1].fan_in, vision[1].fan_out, vision[1].count) == (13 * 729, 1152, 3456, 25)
