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
from minivlm.tiny.checkpoint import Sizes, write_checkpoint_files


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
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


def test_training_forward_is_prefill(checkpoint_dir):
    """train_tiny.forward runs the ViT once per image (max_crops 1: the thumbnail and the one tile are the same
    pixels); it must give model.prefill's hidden states. Float32: 1e-5 covers the different batch shapes."""
    import torch

    from minivlm.core.decoder import KVCache
    from minivlm.tiny.checkpoint import init_weights
    from minivlm.vlm import prefill

    tokenizer, cfg = Tokenizer(checkpoint_dir), load_config(checkpoint_dir)
    rng = random.Random(5)
    scenes = [tiny_task.draw_scene(rng) for _ in range(2)]
    examples = [train_tiny.make_example(s, train_tiny.conversation(s, 2, 2, rng), tokenizer, cfg) for s in scenes]
    batch = collate(examples)
    assert torch.equal(batch["images"][0::2], batch["images"][1::2])  # what makes the shortcut exact
    weights = init_weights(cfg, seed=0)
    with torch.no_grad():
        hidden, _ = train_tiny.forward(weights, cfg, batch)
        cache = KVCache.empty(cfg.text, *batch["input_ids"].shape, torch.float32, torch.device("cpu"))
        expected, _ = prefill(weights, cfg, batch, cache)
    torch.testing.assert_close(hidden, expected, rtol=0, atol=1e-5)
