"""The demo model's training data, as `python` sources of the tiny recipe (`minivlm/train/recipes/tiny.json`).

Each function draws ONE record in the chat-messages format from `rng` (the trainer gives every sample its own
seeded Random), with the image as a PIL image: the synthetic shapes task of `minivlm.tiny_task`.

  alignment    the image alone, then a plain description: "red circle, blue square" (by colour, then kind)
  instruction  up to 8 questions about different facts of one image, each in a random language
  question     one question about one image (tiny_task.sample): a second source for single-source batches
  words        text-only: a colour or shape word in one language -> the same word in another
"""

from __future__ import annotations

import random

from . import task as tiny_task


def _scene(rng: random.Random) -> tiny_task.Scene:
    """tiny_task's scene, re-balanced: a third of the scenes with two or three shapes give them all one kind,
    so that "2" and "3" are common count answers (under the task's own draw "3" is under 2% of them)."""
    scene = tiny_task.draw_scene(rng)
    if len(scene.shapes) > 1 and rng.random() < 1 / 3:
        kind = rng.choice(tiny_task.SHAPES)
        shapes = [tiny_task.Shape(kind, s.color, s.bbox) for s in scene.shapes]
        scene = tiny_task.Scene(scene.width, scene.height, scene.background, shapes)
    return scene


def _chat(turns: list[tuple[str, str]], image=None) -> dict:
    messages = []
    for k, (question, answer) in enumerate(turns):
        parts = ([{"type": "image"}] if image is not None and k == 0 else []) + \
            ([{"type": "text", "text": question}] if question else [])
        messages += [{"role": "user", "content": parts}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "images": [] if image is None else [image]}


def alignment(rng: random.Random) -> dict:
    scene = _scene(rng)
    shapes = sorted(scene.shapes, key=tiny_task.shape_class)
    return _chat([("", ", ".join(f"{s.color} {s.kind}" for s in shapes))], tiny_task.render(scene))


def instruction(rng: random.Random, turns: int = 8) -> dict:
    """Several facts of one image (asking one fact twice would let later answers copy earlier ones)."""
    scene = _scene(rng)
    qas = tiny_task.questions(scene)
    n_facts = len(qas) // len(tiny_task.LANGUAGES)  # questions() lists the same facts for every language
    picked = [qas[rng.randrange(len(tiny_task.LANGUAGES)) * n_facts + f]
              for f in rng.sample(range(n_facts), min(turns, n_facts))]
    return _chat([(qa.question, qa.answer) for qa in picked], tiny_task.render(scene))


def question(rng: random.Random) -> dict:
    image, qa = tiny_task.sample(rng)
    return _chat([(qa.question, qa.answer)], image)


def words(rng: random.Random) -> dict:
    table = rng.choice([tiny_task.COLOR_ANSWERS, tiny_task.SHAPE_ANSWERS])
    source, target = rng.sample(tiny_task.LANGUAGES, 2)
    key = rng.choice(list(table[source]))
    return _chat([(table[source][key], table[target][key])])
