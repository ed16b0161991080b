"""Stage 0 of the embedded model (minivlm.tiny.pretrain): the probe's dense cell labels on every crop (thumbnail
and tiles), its batches and loss, a short run; and the answer-only loss targets the trainer builds for the tiny checkpoint."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from minivlm.formats.config_json import load_config
from minivlm.formats.tokenizer import Tokenizer
from minivlm.tiny import task as tiny_task
from minivlm.tiny import data as tiny_data
from minivlm.tiny import pretrain as stage0
from minivlm.tiny.checkpoint import Sizes, write_checkpoint_files


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """The files of a new training: Sizes() defaults, issue #17's 168 px crops, 2-patch margins, max_crops 4."""
    out = tmp_path_factory.mktemp("tiny")
    write_checkpoint_files(out, Sizes())
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
    kind, centre, centre_x = stage0.cell_targets(scene, cells=8)
    expected = np.zeros((8, 8), dtype=np.int64)
    expected[3:6, 2:5] = tiny_task.shape_class(square)  # rows are y
    assert (kind.reshape(8, 8).numpy() == expected).all()
    assert centre.reshape(8, 8).nonzero().tolist() == [[4, 3]]  # box centre (70, 90) -> row 4, column 3
    # centre x 70 / 160 of the width: twelfth 5, on the square's cells only
    assert (centre_x.reshape(8, 8).numpy() == np.where(expected > 0, 5, -100)).all()
    # The same scene seen by a tile showing its right half: the square's right part, no x target
    kind, centre, centre_x = stage0.cell_targets(scene, cells=8, box=(0.0, 0.5, 1.0, 1.0))
    expected = np.zeros((8, 8), dtype=np.int64)
    expected[3:6, 0:2] = tiny_task.shape_class(square)  # x 80..100 of the image: the tile's first 2 cells of 10 px
    assert (kind.reshape(8, 8).numpy() == expected).all()
    assert centre.sum() == 0 and (centre_x == -100).all()  # the centre (70) lies left of the tile


def test_targets_are_the_answers_and_their_end_of_turn(checkpoint_dir):
    """The trainer's Encoder on a tiny question record (tiled image, several turns): the loss targets are
    exactly the answers, each with its <|im_end|>, each at the position before its token."""
    from minivlm.formats.chat import load_chat_template
    from minivlm.train.data import Encoder, normalize

    tokenizer, cfg = Tokenizer(checkpoint_dir), load_config(checkpoint_dir)
    encoder = Encoder(tokenizer, cfg, load_chat_template(checkpoint_dir), cfg.text.max_sequence_length)
    record = tiny_data.question_record(random.Random(4), turns=3)
    example = encoder(normalize(record, "test", None))
    ids, targets = example["input_ids"], example["targets"]
    predicted = targets[targets >= 0].tolist()
    answers = [m["content"][0]["text"] for m in record["messages"] if m["role"] == "assistant"]
    assert len(answers) == 3 and len(example["images"]) > 2
    assert tokenizer.decode(predicted, skip_special_tokens=False) == "".join(a + "<|im_end|>" for a in answers)
    positions = (targets >= 0).nonzero().flatten()
    assert (ids[positions + 1] == targets[positions]).all()  # each target is the next input token


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


def test_probe_targets_line_up_with_every_crop(checkpoint_dir):
    """max_crops 4: images of different tile counts. `all_crops` keeps every crop `preprocess` makes (thumbnail,
    then tiles) and the probe's labels match each crop's own pixels: the thumbnail's cells as drawn, and on every
    crop, a cell that shows (almost) one colour is labelled with a shape of that colour, or background."""
    from minivlm.core.tiler import unpatchify
    from minivlm.formats.processor import preprocess

    tokenizer, cfg = Tokenizer(checkpoint_dir), load_config(checkpoint_dir)
    cells, side = cfg.vision.pooled_grid[0], cfg.vision.crop_size // cfg.vision.pooled_grid[0]  # 6 cells of 28 px
    assert (cfg.vision.grid, cells, cfg.preprocessor.max_crops) == (12, 6, 4)
    rng = random.Random(7)
    sizes = [(600, 120), (168, 168), (480, 360), (120, 480), (600, 600), (300, 600), (360, 180)]
    scenes, expected = zip(*(aligned_scene(w, h, cells, rng) for w, h in sizes))
    crops = [len(preprocess("<|image|>", [tiny_task.render(s)], tokenizer, cfg)["images"]) for s in scenes]
    assert len(set(crops)) >= 3 and max(crops) == 5, crops  # a thumbnail plus 1 to 4 tiles
    batch = stage0.all_crops(list(scenes), tokenizer, cfg)
    assert batch["images"].shape == (sum(crops), 144, 588)
    firsts = np.cumsum([0] + crops[:-1])
    last = firsts + np.array(crops) - 1
    assert (batch["image_masks"][last] == -1).all()  # the last crop of each image, as in inference
    pixels = ((unpatchify(batch["images"], cfg.vision.patch_size) + 1) * 127.5).round()  # [crops, 3, 168, 168]
    checked = 0
    for b, scene in enumerate(scenes):
        thumb = firsts[b]
        assert (batch["cell_kind"][thumb].reshape(cells, cells).numpy() == expected[b]).all()
        assert batch["cell_centre"][thumb].sum() == len({(s.bbox[0] + s.bbox[2], s.bbox[1] + s.bbox[3])
                                                         for s in scene.shapes})
        bins = {tiny_task.shape_class(s): int((s.bbox[0] + s.bbox[2]) / 2 / scene.width * stage0.X_BINS)
                for s in scene.shapes}
        assert batch["cell_centre_x"][thumb].tolist() == [bins.get(k, -100) for k in expected[b].flatten()]
        for k in range(thumb + 1, thumb + crops[b]):  # tiles: an x target only where the tile shows the whole image
            whole = batch["cell_centre_x"][k].tolist() == batch["cell_centre_x"][thumb].tolist()
            assert (batch["cell_centre_x"][k] == -100).all() or (crops[b] == 2 and whole), (b, k)
        colour_of = {0: list(scene.background)} | {tiny_task.shape_class(s): list(tiny_task.COLORS[s.color])
                                                   for s in scene.shapes}
        for k in range(thumb, thumb + crops[b]):
            for cell, label in enumerate(batch["cell_kind"][k].tolist()):
                r, c = divmod(cell, cells)
                block = pixels[k][:, r * side:(r + 1) * side, c * side:(c + 1) * side].flatten(1).T  # [784, 3]
                values, counts = block.unique(dim=0, return_counts=True)
                if counts.max() >= 0.9 * len(block):  # a cell of one colour: the label must show it
                    assert values[counts.argmax()].tolist() == colour_of[label], (b, k, cell)
                    checked += 1
    assert checked > 0.8 * len(batch["cell_kind"].flatten())


def test_cell_targets_of_an_odd_grid():
    """27 patches (the release's 378 px crops) -> 14 cells: the last cell pools patch 26 and padding, so it
    covers the image's last 1/27 only."""
    square = tiny_task.Shape("square", "red", (0, 260, 270, 270))  # the bottom 10 px of a 270 px image
    scene = tiny_task.Scene(270, 270, tiny_task.BACKGROUNDS["white"], [square])
    kind, _, _ = stage0.cell_targets(scene, cells=14, grid=27)
    kind = kind.reshape(14, 14)
    assert (kind[13] == tiny_task.shape_class(square)).all() and (kind[:13] == 0).all()
    with pytest.raises(ValueError, match="cannot cover"):
        stage0.cell_targets(scene, cells=6, grid=16)


def test_step_batches_and_the_probe_loss(checkpoint_dir):
    """A step's batch depends on (seed, step) only; the probe's loss lines up with the pooled cells of the B
    images' crops (encode_images: [crops, 36, width]) and gradients reach the ViT's first block."""
    import torch

    from minivlm.core.generation import encode_images
    from minivlm.tiny.checkpoint import init_weights

    tokenizer, cfg = Tokenizer(checkpoint_dir), load_config(checkpoint_dir)
    batch = stage0.step_batch(3, 0, 4, tokenizer, cfg)
    n = len(batch["images"])
    assert n > 4 and batch["cell_kind"].shape == batch["cell_centre"].shape == batch["cell_centre_x"].shape == (n, 36)
    assert all(torch.equal(v, stage0.step_batch(3, 0, 4, tokenizer, cfg)[k]) for k, v in batch.items())
    assert not torch.equal(batch["images"], stage0.step_batch(4, 0, 4, tokenizer, cfg)["images"])
    weights = {k: w.requires_grad_() for k, w in init_weights(cfg, seed=0).items()}
    features = encode_images(weights, cfg, batch["images"], batch["image_masks"])
    assert features.shape == (n, 36, cfg.text.hidden_size)
    zero = {name: torch.zeros(classes, cfg.text.hidden_size) for name, classes in stage0.PROBES.items()}
    uniform = math.log(stage0.N_CLASSES) + math.log(2) + math.log(stage0.X_BINS)  # a zero probe guesses uniformly
    assert stage0.probe_loss(features, zero, batch).item() == pytest.approx(uniform, rel=1e-5)
    probe = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(0)) for k, v in zero.items()}
    stage0.probe_loss(features, probe, batch).backward()
    assert weights["model.vision_model.patch_embed.proj.weight"].grad.abs().sum() > 0
    assert weights["lm_head.weight"].grad is None  # the decoder takes no part


def test_pretrain_on_the_tiled_geometry_lowers_the_probe_loss(tmp_path):
    """`minivlm.tiny.pretrain` (stage 0) on Sizes() defaults, 168 px / margins 2 / max_crops 4: a few steps run,
    the loss goes down, the folder is a checkpoint with that geometry, the ViT and connector moved and the
    decoder kept its initial weights, and pretrain_losses.csv holds one row per step."""
    import csv

    import torch

    import minivlm
    from minivlm.tiny.checkpoint import init_weights

    losses = stage0.pretrain(tmp_path, steps=12, batch_size=8, progress=False)
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]), losses
    vlm = minivlm.load(tmp_path, check_weights=True)
    assert (vlm.cfg.vision.crop_size, vlm.cfg.preprocessor.max_crops) == (168, 4)
    start = init_weights(vlm.cfg, seed=0)
    for key in ("model.vision_model.patch_embed.proj.weight", "model.vision_model.vl_connector.pooling.out.weight",
                "lm_head.weight", "model.language_model.layers.0.attn.qkv_w.weight"):
        assert torch.equal(vlm.weights[key], start[key]) == (not key.startswith("model.vision_model.")), key
    rows = list(csv.DictReader((tmp_path / stage0.LOSSES_CSV).open()))
    assert [(r["step"], r["stage"]) for r in rows] == [(str(i + 1), "0") for i in range(12)]
    assert [float(r["loss"]) for r in rows] == pytest.approx(losses, abs=1e-5)
    assert (tmp_path / stage0.LOSS_CURVE).is_file()


def test_pretrain_with_math_attention_runs_math_only_and_gives_the_same_losses(tmp_path, record_flash_enabled):
    """`attention="math"` (`--attention math`): every attention of the forward and backward runs with only the
    math backend enabled, and the first steps' losses match PyTorch's own pick to bfloat16 rounding (autocast:
    1e-2 relative, a few units of bfloat16's 2^-8; both start from the same weights and draws)."""
    default = stage0.pretrain(tmp_path / "default", steps=2, batch_size=4, progress=False)
    flash_enabled = record_flash_enabled()
    math = stage0.pretrain(tmp_path / "math", steps=2, batch_size=4, progress=False, attention="math")
    assert flash_enabled and not any(flash_enabled)
    assert math == pytest.approx(default, rel=1e-2)
