"""Training data of the demo model: the shapes task (`minivlm.tiny.task`) as chat records for the trainer.

A record is one image and one conversation about it, in the chat-messages format trainers and
`minivlm.formats.chat.render_chat` read:

    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q1}]},
                  {"role": "assistant", "content": [{"type": "text", "text": a1}]},
                  {"role": "user", "content": [{"type": "text", "text": q2}]}, ...],
     "images": [PIL.Image]}

The first user turn is exactly the prompt the model gets at inference (`<|image|>` then the question), so
every record also teaches the evaluated format. Two kinds, one per training stage of the paper:
  caption_record   stage 1, alignment: the image alone, then a plain description of it (`caption`);
  question_record  stage 2, instruction tuning: up to `turns` questions about different facts of the
                   image, the question types taken in turn, each in a random language (asking one fact twice
                   would let a later answer copy an earlier one instead of looking).
Scenes come from `training_scene`, which over-draws what the task's own sampler makes rare, and, for the last
recipe, from `count_scene` (counting) and `left_scene` ("which is further left?", mostly on wide images).
Everything is drawn from the `random.Random` passed in, so a seed fixes the data.
"""

from __future__ import annotations

import random

from . import task as tiny_task
from .task import QA, Scene


def training_scene(rng: random.Random) -> Scene:
    """A scene for training, a third each of:
    - the task's own scenes (`tiny_task.draw_scene`), so training sees what evaluation sees;
    - crowds: 3-4 shapes, 3-4 of them identical. Under the task's draw only 9% of count answers are 3 or 4,
      and counting identical shapes is what the previous demo model got wrong;
    - scenes of 2-4 independent shapes that define a "left" question (two kinds present once each, far
      enough apart): 12% of the task's scenes do, while evaluation asks "left" as often as any other type.
    """
    part = rng.randrange(3)
    if part == 0:
        return tiny_task.draw_scene(rng)
    if part == 1:
        n = rng.randint(3, 4)
        return tiny_task.scene_with(rng, n, group=rng.randint(3, n))
    while True:
        scene = tiny_task.scene_with(rng, rng.randint(2, 4))
        if any(qa.qtype == "left" for qa in tiny_task.questions(scene)):
            return scene


def caption(scene: Scene) -> str:
    """Stage 1 target: every shape from left to right (by box centre, then top to bottom), by colour and kind,
    e.g. "red circle, red circle, blue square". Listing each copy teaches counting; the order, position."""
    shapes = sorted(scene.shapes, key=lambda s: (s.bbox[0] + s.bbox[2], s.bbox[1]))
    return ", ".join(f"{s.color} {s.kind}" for s in shapes)


def question_turns(scene: Scene, turns: int, rng: random.Random, qtypes: tuple[str, ...] | None = None) -> list[QA]:
    """Up to `turns` questions about different facts of `scene`, each in a language drawn uniformly. Facts are
    drawn type by type (a type uniformly among those with facts left, then one of its facts), so the three
    count facts by kind and four by colour, mostly "0", do not crowd out the scene's one "left" fact. Both
    orders of a "left" question are one fact. `qtypes`: only those types (default: all)."""
    facts: dict[str, dict[tuple[str, ...], list[QA]]] = {}  # qtype -> about -> that fact's questions
    for qa in tiny_task.questions(scene):
        if qtypes is None or qa.qtype in qtypes:
            facts.setdefault(qa.qtype, {}).setdefault(qa.about, []).append(qa)
    out: list[QA] = []
    while facts and len(out) < turns:
        qtype = rng.choice(list(facts))
        about = rng.choice(list(facts[qtype]))
        language = rng.choice(tiny_task.LANGUAGES)
        out.append(rng.choice([qa for qa in facts[qtype].pop(about) if qa.language == language]))
        if not facts[qtype]:
            del facts[qtype]
    return out


def chat_record(scene: Scene, pairs: list[tuple[str, str]]) -> dict:
    """The record of a conversation of (user text, assistant text) turns about `scene`; the image goes before
    the first user text."""
    messages: list[dict] = []
    for k, (user, assistant) in enumerate(pairs):
        content = ([{"type": "image"}] if k == 0 else []) + ([{"type": "text", "text": user}] if user else [])
        messages += [{"role": "user", "content": content},
                     {"role": "assistant", "content": [{"type": "text", "text": assistant}]}]
    return {"messages": messages, "images": [tiny_task.render(scene)]}


def caption_record(rng: random.Random) -> dict:
    """Stage 1: a training scene; the user turn is the image alone, the answer its `caption`."""
    scene = training_scene(rng)
    return chat_record(scene, [("", caption(scene))])


def question_record(rng: random.Random, turns: int = 8, qtypes: tuple[str, ...] | None = None) -> dict:
    """Stage 2: a training scene and `question_turns` about it (of `qtypes` only, if given), as one multi-turn
    chat."""
    scene = training_scene(rng)
    return chat_record(scene, [(qa.question, qa.answer) for qa in question_turns(scene, turns, rng, qtypes)])


# More sources for the trainer's tiny recipes (minivlm/train/recipes/tiny.json and tiny-counting.json), beside the two
# above.

def one_question_record(rng: random.Random) -> dict:
    """Stage 2's second source (the paper's single-source batches need more than one): one question, the
    task's own sampler (`tiny_task.sample_scene`), exactly what evaluation asks."""
    scene, qa = tiny_task.sample_scene(rng)
    return chat_record(scene, [(qa.question, qa.answer)])


def word_record(rng: random.Random) -> dict:
    """Text only (the paper mixes ~15% into alignment): a colour or shape word in one language, the same word in
    another."""
    table = rng.choice([tiny_task.COLOR_ANSWERS, tiny_task.SHAPE_ANSWERS])
    source, target = rng.sample(tiny_task.LANGUAGES, 2)
    key = rng.choice(list(table[source]))
    return {"messages": [{"role": "user", "content": table[source][key]},
                         {"role": "assistant", "content": table[target][key]}], "images": []}


def counts_and_left_record(rng: random.Random, turns: int = 8) -> dict:
    """A source of the counting recipe: a `question_record` asking only the types learnt last, counting (by kind
    and by colour) and "which is further left?", on the scenes that make them hard (`training_scene`)."""
    return question_record(rng, turns, qtypes=("count", "count_color", "left"))


def wide_size(rng: random.Random) -> tuple[int, int]:
    """(width, height) of an image more than twice as wide as tall: 14% of the task's images, cut into a row of
    3-4 tiles beside a thumbnail squashed sideways. "Which is further left?" is answered worst on them: 77% of
    122 such questions with the weights before `left_record` existed, against 92-96% on images more than twice
    as tall as wide and 95% on the rest (README)."""
    short = rng.randint(tiny_task.MIN_SIDE, tiny_task.MAX_SIDE // 2 - 1)  # long side > 2 x short fits in 640
    return rng.randint(2 * short + 1, tiny_task.MAX_SIDE), short


def tall_size(rng: random.Random) -> tuple[int, int]:
    """A `wide_size` drawn, transposed: more than twice as tall as wide."""
    width, height = wide_size(rng)
    return height, width


def left_scene(rng: random.Random) -> Scene:
    """2-4 shapes that define a "left" question (as `training_scene`'s third part): on a `wide_size` image half
    the time, on a `tall_size` one a sixth of the time, else on one of the task's sizes (`draw_size` None)."""
    r = rng.random()
    draw_size = wide_size if r < 1 / 2 else tall_size if r < 2 / 3 else None
    while True:
        scene = tiny_task.scene_with(rng, rng.randint(2, 4), draw_size=draw_size)
        if any(qa.qtype == "left" for qa in tiny_task.questions(scene)):
            return scene


def left_record(rng: random.Random, turns: int = 8) -> dict:
    """The last stage's "left" source: a `left_scene` and up to `turns` questions about it that need each shape
    found and told apart: which is further left, and colour or shape of what is present once."""
    scene = left_scene(rng)
    return chat_record(scene, [(qa.question, qa.answer)
                               for qa in question_turns(scene, turns, rng, ("left", "color", "shape"))])


def count_scene(rng: random.Random) -> Scene:
    """2-4 shapes, 2 or more of them of one kind (all of one colour, or each of any colour), the rest of other
    kinds. Counting by kind is what the model after tiny.json got wrong most, "2" above all: under
    `training_scene` only 8% of the count-by-kind answers are 2 (43% are 0), under the task's own draw 14%."""
    n = rng.randint(2, tiny_task.MAX_SHAPES)
    k = rng.randint(2, n)
    kind = rng.choice(tiny_task.SHAPES)
    others = [s for s in tiny_task.SHAPES if s != kind]
    colours = list(tiny_task.COLORS)
    colour = rng.choice(colours) if rng.random() < 0.5 else None  # None: each copy draws its own colour
    looks = [(kind, colour or rng.choice(colours)) for _ in range(k)]
    looks += [(rng.choice(others), rng.choice(colours)) for _ in range(n - k)]
    return tiny_task.scene_with(rng, n, looks=looks)


def count_record(rng: random.Random, turns: int = 8) -> dict:
    """The last stage's counting source: a `count_scene` and up to `turns` count questions about it (by kind
    and by colour)."""
    scene = count_scene(rng)
    return chat_record(scene, [(qa.question, qa.answer)
                               for qa in question_turns(scene, turns, rng, ("count", "count_color"))])
