"""The tiling search stays small and exact for every tile budget (core/tiler.py)."""

import functools
import time
from dataclasses import replace

import pytest
import torch
from bad_input import CFG

from minivlm.core.config import MAX_CROPS_LIMIT, with_max_crops
from minivlm.core.tiler import _window_px, choose_tiling, tiling_candidates


@functools.cache
def official_candidates(n: int) -> list[tuple[int, int]]:
    """The official enumeration: all n x n pairs with i * j <= n, sorted by (tiles, rows)."""
    return sorted(((i, j) for i in range(1, n + 1) for j in range(1, n + 1) if i * j <= n),
                  key=lambda t: (t[0] * t[1], t[0]))


def brute_force_tiling(height: int, width: int, cfg) -> tuple[int, int]:
    """The official search as it was written (before minivlm built the candidates per row count)."""
    window, margin = _window_px(cfg)
    candidates = official_candidates(cfg.preprocessor.max_crops)
    tiles = torch.tensor(candidates, dtype=torch.float32)
    need = torch.tensor([height - margin, width - margin], dtype=torch.float32)
    scale = (tiles * window / need).min(dim=1).values
    if (scale < 1).all():
        index = scale.argmax()
    else:
        index = torch.where(scale < 1, torch.tensor(1e10), scale).argmin()
    return candidates[int(index)]


@pytest.mark.parametrize("n", [1, 2, 3, 12, 13, 64, 100, 1000, MAX_CROPS_LIMIT])
def test_candidates_are_the_official_list(n):
    assert [tuple(c) for c in tiling_candidates(n).tolist()] == official_candidates(n)


SIZES = [(14, 14), (112, 112), (113, 700), (378, 378), (644, 644), (910, 1176), (1176, 910), (266, 9000),
         (9000, 266), (5000, 5000), (2800, 14), (14, 2800), (1000, 1001), (3990, 2394)]


@pytest.mark.parametrize("n", [1, 2, 5, 12, 30, 97, 256, 600, MAX_CROPS_LIMIT])
def test_choice_equals_the_brute_force(n):
    cfg = with_max_crops(CFG, n)
    for h, w in SIZES:
        assert choose_tiling(h, w, cfg) == brute_force_tiling(h, w, cfg), (n, h, w)


def test_the_largest_budget_is_quick_and_a_larger_one_refused():
    cfg = with_max_crops(CFG, MAX_CROPS_LIMIT)
    start = time.perf_counter()
    for h, w in SIZES:
        choose_tiling(h, w, cfg)
    assert time.perf_counter() - start < 1.0
    huge = replace(CFG, preprocessor=replace(CFG.preprocessor, max_crops=10**9))  # a config built by hand
    with pytest.raises(ValueError, match="max_crops must be an integer from 1 to 1024, got 1000000000"):
        choose_tiling(378, 378, huge)
