"""The training data of the embedded model (minivlm.train_tiny): dense cell labels, loss targets, captions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from minivlm.core.batch import collate
from minivlm.formats.config_json import load_config
from minivlm.formats.tokenizer import Tokenizer
from minivlm.tiny import task as tiny_task
from minivlm.tiny import train as train_tiny
from minivlm.tiny.checkpoint import SHIPPED_SIZES, Sizes, write_checkpoint_files


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """The files of a new training: Sizes() defaults, issue #17's 168 px crops, 2-patch margins, max_crops 4."""
    out = tmp_path_factory.mktemp("tiny")
    write_checkpoint_files(out, Sizes())
    return out


@pytest.fixture(scope="module")
def one_tile_dir(tmp_path_factory):
    """The shipped model's geometry: 224 px crops, max_crops 1 (a thumbnail plus one tile, the same pixels)."""
    out = tmp_path_factory.mktemp("tiny-one-tile")
    write_checkpoint_files(out, SHIPPED_SIZES)
    return out


def test_label_map_matches_the_rendered_pixels():
    rng = random.Random(0)
    for _ in range(20):
        scene = tiny_task.draw_scene(rng)
        image = np.array(tiny_task.render(scene))  # [H, W, 3]
        labels = np.array(tiny_task.label_map(scene))  # [H, W]
        assert ((labels > 0) == (image != scene.background).any(-1)).all()
        for shape in scene.shapes:
            x0, y0, x1, y1 = shape.bbox
            inside = labels[y0:y1, x0:x1]
            assert set(np.unique(inside)) <= {0, tiny_task.shape_class(shape)}
            assert (image[y0:y1, x0:x1][inside > 0] == tiny_task.COLORS[shape.color]).all()


def test_cell_targets_of_one_square():
    # 160 x 160 image, 8 x 8 cells of 20 px; a blue square over pixels [40, 100) x [60, 120): cells 2..4 x 3..5
    square = tiny_task.Shape("square", "blue", (40, 60, 100, 120))
    scene = tiny_task.Scene(160, 160, tiny_task.BACKGROUNDS["white"], [square])
    kind, centre = train_tiny.cell_targets(scene, cells=8)
    expected = np.zeros((8, 8), dtype=np.int64)
    expected[3:6, 2:5] = tiny_task.shape_class(square)  # rows are y
    assert (kind.reshape(8, 8).numpy() == expected).all()
    assert centre.reshape(8, 8).nonzero().tolist() == [[4, 3]]  # box centre (70, 90) -> row 4, column 3


def test_targets_are_the_answers_and_their_end_of_turn(checkpoint_dir):
    tokenizer, cfg = Tokenizer(checkpoint_dir), load_config(checkpoint_dir)
    scene = tiny_task.draw_scene(random.Random(3))
    messages = train_tiny.conversation(scene, stage=2, turns=3, rng=random.Random(4))
    example = train_tiny.make_example(scene, messages, tokenizer, cfg)
    ids, targets = example["input_ids"], example["targets"]
    predicted = targets[targets >= 0].tolist()
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert tokenizer.decode(predicted, skip_special_tokens=False) == "".join(a + "<|im_end|>" for a in answers)
    positions = (targets >= 0).nonzero().flatten()
    assert (ids[positions + 1] == targets[positions]).all()  # each target is the next input token


def test_stage_one_caption_lists_every_shape():
    shapes = [tiny_task.Shape("square", "blue", (80, 0, 110, 30)), tiny_task.Shape("triangle", "blue", (0, 0, 30, 30)),
              tiny_task.Shape("circle", "red", (40, 0, 70, 30))]
    scene = tiny_task.Scene(200, 100, tiny_task.BACKGROUNDS["grey"], shapes)
    assert train_tiny.caption(scene) == "blue triangle, red circle, blue square"  # left to right
    assert train_tiny.conversation(scene, 1, 8, random.Random(0))[1]["content"] == train_tiny.caption(scene)


@pytest.mark.parametrize("folder", ["one_tile_dir", "checkpoint_dir"])
def test_training_forward_is_prefill(folder, request):
    """train_tiny.forward must give model.prefill's hidden states. With max_crops 1 it runs the ViT once per image
    (the thumbnail and the one tile are the same pixels); with max_crops 4 on every crop. Float32: 1e-5 covers
    the different batch shapes."""
    import torch

    from minivlm.core.decoder import KVCache
    from minivlm.tiny.checkpoint import init_weights
    from minivlm.vlm import prefill

    directory = request.getfixturevalue(folder)
    tokenizer, cfg = Tokenizer(directory), load_config(directory)
    rng = random.Random(5)
    scenes = [tiny_task.draw_scene(rng) for _ in range(2)]
    examples = [train_tiny.make_example(s, train_tiny.conversation(s, 2, 2, rng), tokenizer, cfg) for s in scenes]
    batch = collate(examples)
    if cfg.preprocessor.max_crops == 1:
        assert torch.equal(batch["images"][0::2], batch["images"][1::2])  # what makes the shortcut exact
    else:
        assert len(batch["images"]) > 2 * len(scenes)
    weights = init_weights(cfg, seed=0)
    with torch.no_grad():
        hidden, _ = train_tiny.forward(weights, cfg, batch)
        cache = KVCache.empty(cfg.text, *batch["input_ids"].shape, torch.float32, torch.device("cpu"))
        expected, _ = prefill(weights, cfg, batch, cache)
    torch.testing.assert_close(hidden, expected, rtol=0, atol=1e-5)


def aligned_scene(width: int, height: int, cells: int, rng: random.Random) -> tuple[tiny_task.Scene, np.ndarray]:
    """A scene of 1-3 squares whose edges fall on the thumbnail's cell edges (the image is cut into
    cells x cells rectangles), and the kind map expected of `cell_targets` [cells, cells]."""
    assert width % cells == 0 and height % cells == 0
    cw, ch = width // cells, height // cells
    expected, shapes = np.zeros((cells, cells), dtype=np.int64), []
    colors = rng.sample(sorted(tiny_task.COLORS), 3)
    for color in colors[:rng.randint(1, 3)]:
        for _ in range(50):  # a free block of 1-3 x 1-3 cells
            r, c, h, w = rng.randrange(cells), rng.randrange(cells), rng.randint(1, 3), rng.randint(1, 3)
            if r + h <= cells and c + w <= cells and not expected[r:r + h, c:c + w].any():
                break
        else:
            continue
        square = tiny_task.Shape("square", color, (c * cw, r * ch, (c + w) * cw, (r + h) * ch))
        shapes.append(square)
        expected[r:r + h, c:c + w] = tiny_task.shape_class(square)
    return tiny_task.Scene(width, height, tiny_task.BACKGROUNDS["white"], shapes), expected


def test_probe_targets_line_up_with_the_thumbnails_of_a_tiled_batch(checkpoint_dir):
    """max_crops 4: images of different tile counts in one collated batch. `thumbnail_rows` finds each image's
    thumbnail (its first crop) and the probe's labels, on the thumbnail's 6 x 6 pooled grid, name the colour
    the thumbnail's pixels show in each cell."""
    import torch

    from minivlm.core.tiler import unpatchify
    from minivlm.formats.processor import preprocess

    tokenizer, cfg = Tokenizer(checkpoint_dir), load_config(checkpoint_dir)
    cells = cfg.vision.pooled_grid[0]
    assert (cfg.vision.grid, cells, cfg.preprocessor.max_crops) == (12, 6, 4)
    rng = random.Random(7)
    sizes = [(600, 120), (168, 168), (480, 360), (120, 480), (600, 600), (300, 600), (360, 180)]
    scenes, expected = zip(*(aligned_scene(w, h, cells, rng) for w, h in sizes))
    examples = [train_tiny.make_example(s, train_tiny.conversation(s, 2, 2, rng), tokenizer, cfg) for s in scenes]
    crops = [len(e["images"]) for e in examples]
    assert len(set(crops)) >= 3 and max(crops) == 5, crops  # a thumbnail plus 1 to 4 tiles
    batch = collate(examples)
    rows = train_tiny.thumbnail_rows(batch["crop_batch_index"])
    assert rows.tolist() == [sum(crops[:b]) for b in range(len(crops))]
    for b, scene in enumerate(scenes):
        alone = preprocess("<|image|>", [tiny_task.render(scene)], tokenizer, cfg)["images"][0]
        assert torch.equal(batch["images"][rows[b]], alone)  # the thumbnail, not a tile
        kind, centre = train_tiny.cell_targets(scene, cells, grid=cfg.vision.grid)
        assert (kind.reshape(cells, cells).numpy() == expected[b]).all()
        assert centre.sum() == len({(s.bbox[0] + s.bbox[2], s.bbox[1] + s.bbox[3]) for s in scene.shapes})
        pixels = unpatchify(batch["images"][rows[b]][None], cfg.vision.patch_size)[0]  # [3, 168, 168] in [-1, 1]
        side = cfg.vision.crop_size // cells  # 28 px per cell
        for r in range(cells):
            for c in range(cells):
                shown = ((pixels[:, r * side + side // 2, c * side + side // 2] + 1) * 127.5).round().tolist()
                label = expected[b][r, c]
                colour = scene.background if label == 0 else tiny_task.COLORS[
                    next(s.color for s in scene.shapes if tiny_task.shape_class(s) == label)]
                assert shown == list(colour), (b, r, c, shown, colour)


def test_cell_targets_of_an_odd_grid():
    """27 patches (the release's 378 px crops) -> 14 cells: the last cell pools patch 26 and padding, so it
    covers the image's last 1/27 only."""
    square = tiny_task.Shape("square", "red", (0, 260, 270, 270))  # the bottom 10 px of a 270 px image
    scene = tiny_task.Scene(270, 270, tiny_task.BACKGROUNDS["white"], [square])
    kind, _ = train_tiny.cell_targets(scene, cells=14, grid=27)
    kind = kind.reshape(14, 14)
    assert (kind[13] == tiny_task.shape_class(square)).all() and (kind[:13] == 0).all()
    with pytest.raises(ValueError, match="cannot cover"):
        train_tiny.cell_targets(scene, cells=6, grid=16)


def test_tiled_step_batches_and_their_losses(checkpoint_dir):
    """StepBatches with max_crops 4: stage 0 holds each image's thumbnail alone, stages 1-2 every crop; the
    probe's loss lines up with the B thumbnails in every stage (the max_crops-1 shortcut took every other crop:
    'input batch_size 1404 vs target 576')."""
    import torch

    from minivlm.tiny.checkpoint import init_weights

    recipe = train_tiny.Recipe(vision_steps=1, align_steps=1, instruct_steps=1, batch_size=4, turns=2)
    data = train_tiny.StepBatches(checkpoint_dir, seed=0, recipe=recipe)
    weights = init_weights(data.cfg, seed=0)
    probe = {"kind": torch.zeros(train_tiny.N_CLASSES, data.cfg.text.hidden_size),
             "centre": torch.zeros(2, data.cfg.text.hidden_size)}
    for step in range(3):
        batch = data[step]
        assert batch["cell_kind"].shape == batch["cell_centre"].shape == (4, 36)
        if step == 0:
            assert batch["images"].shape == (4, 144, 588) and (batch["image_masks"] == 1).all()
        else:
            assert len(batch["images"]) > 8 and len(train_tiny.thumbnail_rows(batch["crop_batch_index"])) == 4
        with torch.no_grad():
            loss, _ = train_tiny.step_loss(weights, probe, data.cfg, batch, recipe)
        assert torch.isfinite(loss)


def test_pretrain_on_the_tiled_geometry_lowers_the_probe_loss(tmp_path):
    """`minivlm.tiny.pretrain` (stage 0) on Sizes() defaults, 168 px / margins 2 / max_crops 4: a few steps run,
    the loss goes down, and the folder is a checkpoint with that geometry."""
    import minivlm
    from minivlm.tiny.pretrain import pretrain

    losses = pretrain(tmp_path, steps=12, batch_size=8, progress=False)
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]), losses
    cfg = minivlm.load(tmp_path, check_weights=True).cfg
    assert (cfg.vision.crop_size, cfg.preprocessor.max_crops) == (168, 4)
