"""The image tiler: one picture in, a stack of 378 px crops and the image's token layout out.

Where it sits:  pixels -> **tiler** -> patch embed -> ViT -> pooler -> decoder -> sampler.
Paper: section 2 (architecture), "overlapping tiles + a global thumbnail". Mirrors the official image
processor, `JinaVLMImageProcessor` in image_processing_jvlm.py (its smart_resize, the tiling search, the
overlap-and-resize cropping and the token layout), bit for bit.

A ViT sees a fixed 378x378 crop (27x27 patches of 14 px). To read a large picture the tiler
1. resizes it so both sides are multiples of 14 and the area is within [min_pixels, max_pixels] (smart_resize),
2. picks a grid of i x j tiles (choose_tiling) and stretches the image onto a canvas of 266i+112 by 266j+112 px,
3. cuts overlapping 378 px crops every 266 px: each crop has a 4-patch margin on every side that overlaps
   its neighbour, so every kept patch saw some context,
4. prepends a 378x378 thumbnail of the whole image.
After pooling 2x2, each crop gives 14x14 cells; the margin cells of interior tile sides are dropped and the
rest are stitched into one grid. The decoder sees a thumbnail block then a tile block, each laid out as
`<im_start>` + rows x (cols `<im_patch>` + `<im_col>`) + `<im_end>`.

Pixels come in as a uint8 [H, W, 3] array: opening files (and PIL) is `minivlm.formats.image_io`'s job.
All sizes come from cfg: the crop geometry from cfg.vision, the tiling budget from cfg.preprocessor.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import MAX_CROPS_LIMIT, ModelConfig
from .tokens import ImageTokenIds

MAX_ASPECT_RATIO = 200  # the official smart_resize refuses longer strips


class ImageError(ValueError):
    """The image cannot be processed (not an image, broken, empty, too large or too elongated)."""


def check_aspect_ratio(width: int, height: int, name: str = "the image") -> None:
    if min(width, height) < 1:
        raise ImageError(f"{name}: the image is empty ({width}x{height} px)")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(f"{name}: aspect ratio {ratio:.1f} ({width}x{height} px) exceeds the limit of "
                         f"{MAX_ASPECT_RATIO}; crop or pad the image to a less elongated shape")


@dataclass(frozen=True)
class TiledImage:
    patches: torch.Tensor  # [crops, 729, 588] float32, thumbnail first, values in [-1, 1]
    image_masks: torch.Tensor  # [crops, 729] int64 (official off-by-one: last tile is -1)
    token_ids: torch.Tensor  # [n_image_tokens] int64: thumbnail block then tile block
    patch_positions: torch.Tensor  # [crops, 196] int64: index into token_ids of each cell, -1 if dropped
    tiling: tuple[int, int]  # (rows, cols)
    resized_hw: tuple[int, int]  # after smart_resize


@dataclass(frozen=True)
class TokenCounts:
    resized_hw: tuple[int, int]
    tiling: tuple[int, int]
    crops: int  # thumbnail + tiles
    vit_tokens: int  # patches the ViT runs on
    pooled_computed: int  # connector outputs computed
    pooled_used: int  # connector outputs kept = <im_patch> tokens
    layout_tokens: int  # <im_start>, <im_end>, <im_col>
    llm_positions: int  # pooled_used + layout_tokens = len(token_ids)


def smart_resize(height: int, width: int, cfg: ModelConfig) -> tuple[int, int]:
    """Nearest size with sides divisible by the patch size and area in [min_pixels, max_pixels]."""
    check_aspect_ratio(width, height)
    f, pp = cfg.vision.patch_size, cfg.preprocessor
    h, w = round(height / f) * f, round(width / f) * f  # Python round: half to even, as upstream
    if h * w > pp.max_pixels:
        beta = math.sqrt(height * width / pp.max_pixels)
        h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
    elif h * w < pp.min_pixels:
        beta = math.sqrt(pp.min_pixels / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return h, w


def _window_px(cfg: ModelConfig) -> tuple[int, int]:
    """(stride between crop origins, total margin) in pixels: (266, 112) in the release."""
    margin = sum(cfg.preprocessor.overlap_margins) * cfg.vision.patch_size
    return cfg.vision.crop_size - margin, margin


def _tile_layout(tiling: tuple[int, int], cfg: ModelConfig) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The canvas the image is resized to for `tiling` (height, width) and each tile's top-left corner on it,
    row by row: tiles are crop_size squares one window apart, so neighbours overlap by the margins."""
    window, margin = _window_px(cfg)
    canvas = (window * tiling[0] + margin, window * tiling[1] + margin)
    return canvas, [(window * r, window * c) for r in range(tiling[0]) for c in range(tiling[1])]


def tiling_candidates(max_crops: int) -> torch.Tensor:
    """Every (rows, cols) grid with rows * cols <= max_crops, ordered by (tiles, rows): [candidates, 2] int64.

    Built per row count i (cols 1 .. max_crops // i), so n log n grids, never the n x n pairs; refuses a budget
    above MAX_CROPS_LIMIT, which no image needs (the config readers and the command line refuse it earlier).
    """
    if isinstance(max_crops, bool) or not isinstance(max_crops, int) or not 1 <= max_crops <= MAX_CROPS_LIMIT:
        raise ValueError(f"max_crops must be an integer from 1 to {MAX_CROPS_LIMIT}, got {max_crops!r}")
    return _candidates(max_crops).clone()


@functools.lru_cache(maxsize=16)
def _candidates(n: int) -> torch.Tensor:
    rows = np.arange(1, n + 1)
    per_row = n // rows  # row count i allows cols 1 .. n // i
    i = np.repeat(rows, per_row)
    j = np.arange(len(i)) - np.repeat(np.cumsum(per_row) - per_row, per_row) + 1  # 1, 2, ... within each run
    order = np.argsort(i * j * (n + 1) + i)  # by tiles, then rows: the official sort key (unique per grid)
    return torch.from_numpy(np.stack([i[order], j[order]], axis=1)).long()


def choose_tiling(height: int, width: int, cfg: ModelConfig) -> tuple[int, int]:
    """(rows, cols) of tiles for a smart-resized image: the fewest tiles that need no downscaling."""
    window, margin = _window_px(cfg)
    candidates = tiling_candidates(cfg.preprocessor.max_crops)
    tiles = candidates.float()  # [candidates, 2]
    # Float32 like upstream; a side of exactly `margin` px divides by 0 -> +inf, so the other side decides.
    # A side below it is negative: every scale < 1, and argmax picks (1, 1).
    need = torch.tensor([height - margin, width - margin], dtype=torch.float32)
    scale = (tiles * window / need).min(dim=1).values  # [candidates]
    if (scale < 1).all():
        index = scale.argmax()  # nothing fits: upscale the least (the first such grid in the order)
    else:
        index = torch.where(scale < 1, torch.tensor(1e10), scale).argmin()  # smallest upscale that fits
    rows, cols = candidates[int(index)].tolist()
    return rows, cols


def _kept_cells(n_tiles: int, pool: int, cfg: ModelConfig) -> list[tuple[int, int]]:
    """Per tile along one axis: (first kept pooled cell, number kept). Interior margins are dropped."""
    left, right = cfg.preprocessor.overlap_margins
    grid = cfg.vision.grid
    kept = []
    for t in range(n_tiles):
        patches = grid - left - right + (left if t == 0 else 0) + (right if t == n_tiles - 1 else 0)
        kept.append((0 if t == 0 else left // pool, -(-patches // pool)))
    return kept


def _stitched_grid(tiling: tuple[int, int], cfg: ModelConfig) -> tuple[int, int]:
    """Rows and columns of kept cells over all tiles: (10i + 4, 10j + 4) in the release."""
    rows = sum(n for _, n in _kept_cells(tiling[0], cfg.vision.pool_h, cfg))
    cols = sum(n for _, n in _kept_cells(tiling[1], cfg.vision.pool_w, cfg))
    return rows, cols


def token_counts(width: int, height: int, cfg: ModelConfig) -> TokenCounts:
    """What an image of width x height costs, without touching pixels (width first, like PIL's size)."""
    resized = smart_resize(height, width, cfg)
    tiling = choose_tiling(*resized, cfg)
    crops = 1 + tiling[0] * tiling[1]
    tok_h, tok_w = cfg.vision.pooled_grid
    rows, cols = _stitched_grid(tiling, cfg)
    used = tok_h * tok_w + rows * cols
    layout = (tok_h + 2) + (rows + 2)  # one <im_col> per row, plus <im_start> and <im_end>, for both blocks
    return TokenCounts(resized_hw=resized, tiling=tiling, crops=crops, vit_tokens=crops * cfg.vision.grid**2,
                       pooled_computed=crops * tok_h * tok_w, pooled_used=used,
                       layout_tokens=layout, llm_positions=used + layout)


def crop_boxes(width: int, height: int, cfg: ModelConfig) -> list[tuple[float, float, float, float]]:
    """Where each crop of `tile_image` lies in the image, as fractions (top, left, bottom, right): the thumbnail
    (the whole image) first, then the tiles row by row. A tile's box is its window on the resized canvas, whose
    sides map proportionally onto the image's (both resizes stretch, corner to corner)."""
    (canvas_h, canvas_w), corners = _tile_layout(choose_tiling(*smart_resize(height, width, cfg), cfg), cfg)
    side = cfg.vision.crop_size
    return [(0.0, 0.0, 1.0, 1.0)] + [(y / canvas_h, x / canvas_w, (y + side) / canvas_h, (x + side) / canvas_w)
                                     for y, x in corners]


def _resize(image: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear, no antialias, aspect ratio ignored: [3, H, W] float32 -> [3, h, w].

    One channel at a time: PyTorch's CPU kernel rounds differently when a single thread resizes all three
    planes in one call (189 of the 1176x910 example's resized values differ by one after rounding to uint8).
    Per plane, the result is the same for any thread count and equals the official processor's on a multi-core
    machine, which is what the golden fixtures hold."""
    planes = [F.interpolate(plane[None, None], size=hw, mode="bilinear", align_corners=False, antialias=False)
              for plane in image]  # each [1, 1, h, w]
    return torch.cat(planes, dim=1)[0]  # [3, h, w]


def _to_model_range(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], after clipping the resize's overshoot."""
    return -1 + image.clip(0, 1) * 2


def _patchify(crops: torch.Tensor, patch: int) -> torch.Tensor:
    """[n, 3, S, S] -> [n, (S/p)^2, p*p*3]: patches row-major, each flattened (dy, dx, channel)."""
    n, c, s, _ = crops.shape
    g = s // patch
    x = crops.reshape(n, c, g, patch, g, patch)  # [n, 3, 27, 14, 27, 14]
    x = x.permute(0, 2, 4, 3, 5, 1)  # [n, 27, 27, 14, 14, 3]
    return x.reshape(n, g * g, patch * patch * c)  # [n, 729, 588]


def unpatchify(patches: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of the patchify step: [n, g², p*p*3] -> [n, 3, g*p, g*p] (e.g. to look at a crop)."""
    n, tokens, _ = patches.shape
    g = math.isqrt(tokens)
    x = patches.reshape(n, g, g, patch, patch, 3)  # [n, 27, 27, 14, 14, 3]: each patch (dy, dx, channel)
    x = x.permute(0, 5, 1, 3, 2, 4)  # [n, 3, 27, 14, 27, 14]
    return x.reshape(n, 3, g * patch, g * patch)  # [n, 3, 378, 378]


def _block(rows: int, cols: int, ids: ImageTokenIds) -> torch.Tensor:
    """<im_start>, rows x (cols <im_patch>, <im_col>), <im_end>."""
    grid = torch.full((rows, cols + 1), ids.patch, dtype=torch.int64)  # [rows, cols + 1]
    grid[:, -1] = ids.col
    return torch.cat([torch.tensor([ids.start]), grid.flatten(), torch.tensor([ids.end])])


def _patch_positions(rows: int, cols: int, offset: int) -> torch.Tensor:
    """Index of each <im_patch> of a block starting at `offset`: [rows, cols]."""
    return offset + 1 + torch.arange(rows)[:, None] * (cols + 1) + torch.arange(cols)


def _tile_positions(tiling: tuple[int, int], offset: int, cfg: ModelConfig) -> torch.Tensor:
    """[tiles, tok_h * tok_w]: each tile's kept cells point into the stitched grid, margins get -1."""
    tok_h, tok_w = cfg.vision.pooled_grid
    kept_rows = _kept_cells(tiling[0], cfg.vision.pool_h, cfg)
    kept_cols = _kept_cells(tiling[1], cfg.vision.pool_w, cfg)
    stitched = _patch_positions(*_stitched_grid(tiling, cfg), offset)  # [rows_tok, cols_tok]
    out, y = [], 0
    for start_y, n_y in kept_rows:
        x = 0
        for start_x, n_x in kept_cols:
            cell = torch.full((tok_h, tok_w), -1, dtype=torch.int64)  # [14, 14]
            cell[start_y:start_y + n_y, start_x:start_x + n_x] = stitched[y:y + n_y, x:x + n_x]
            out.append(cell.flatten())
            x += n_x
        y += n_y
    return torch.stack(out)


def tile_image(pixels: np.ndarray, cfg: ModelConfig, ids: ImageTokenIds) -> TiledImage:
    """uint8 pixels [H, W, 3] -> normalized crops (thumbnail first), the image's tokens and where each crop's
    cells go. (`minivlm.formats.image_io.to_rgb_array` makes such an array from a file or a PIL image.)"""
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3):
        what = f"array {pixels.dtype} {list(pixels.shape)}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise ImageError(f"the tiler takes uint8 [H, W, 3] pixels, got {what}")
    # Departs from the official code: it guesses the channel axis and reads an image 1 or 3 px tall as
    # channels-first (wrong height and width). We always take the true [H, W, 3] size.
    resized = smart_resize(pixels.shape[0], pixels.shape[1], cfg)
    tiling = choose_tiling(*resized, cfg)
    # First resize on uint8 values like torchvision: float32, interpolate, round half to even, back to uint8.
    chw = torch.from_numpy(pixels).permute(2, 0, 1).float()  # [3, H, W]
    small = _resize(chw, resized).round().clamp(0, 255).to(torch.uint8).float() / 255  # [3, h, w] in [0, 1]

    canvas_hw, corners = _tile_layout(tiling, cfg)
    s = cfg.vision.crop_size
    canvas = _to_model_range(_resize(small, canvas_hw))
    tiles = [canvas[:, y:y + s, x:x + s] for y, x in corners]  # [3, 378, 378] each
    thumbnail = _to_model_range(_resize(small, (s, s)))  # the whole image, squashed to one crop
    patches = _patchify(torch.stack([thumbnail, *tiles]), cfg.vision.patch_size)  # [crops, 729, 588]

    tok_h, tok_w = cfg.vision.pooled_grid
    rows, cols = _stitched_grid(tiling, cfg)
    thumb_block = _block(tok_h, tok_w, ids)
    token_ids = torch.cat([thumb_block, _block(rows, cols, ids)])
    positions = torch.cat([_patch_positions(tok_h, tok_w, 0).reshape(1, -1),  # [1, 196]
                           _tile_positions(tiling, len(thumb_block), cfg)])  # [crops, 196]

    # Upstream stacks one all-ones mask per tile, appends a row of -1, then prepends the thumbnail to the crops
    # but not to the masks: the thumbnail gets tile 0's row and the last tile gets -1 ("partial pad").
    # The model was trained like that, so we keep it.
    masks = torch.ones(len(patches), patches.shape[1], dtype=torch.int64)  # [crops, 729]
    masks[-1] = -1
    return TiledImage(patches=patches, image_masks=masks, token_ids=token_ids,
                      patch_positions=positions, tiling=tiling, resized_hw=resized)
