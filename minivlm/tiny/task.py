"""A synthetic multilingual visual question answering task: coloured shapes on a plain background.

Why it exists: minivlm ships an embedded demo model small enough to train from scratch on a CPU, so
`make demo` runs offline and still answers correctly. That model is trained on this task, following the
paper's two training stages at toy scale (alignment, then instruction tuning), and so is its tokenizer
(`minivlm.tiny.tokenizer`), built from the question and answer strings defined here.

The task (issue #17, held to exactly):
- An image of width and height each in [128, 640] px, white (255,255,255) or light grey (235,235,235), holds
  1 to 4 filled shapes whose bounding boxes do not touch: a circle, an axis-aligned square or an upright
  triangle (apex at the top centre of its box, base along its bottom edge), with a square bounding box of side
  15-30% of the shorter image side, coloured red (220,30,30), green (30,160,60), blue (30,80,220) or
  yellow (240,200,20). In about half of the scenes (the task asks for at least a third) two or more shapes
  share kind and colour, so that counting identical shapes is part of the task.
- Questions in English, German, Spanish and Chinese, asked only when their answer is defined:
    color       - the colour of a kind present exactly once,
    count       - how many shapes of a kind there are (0 to 4, always defined),
    count_color - how many shapes of a colour there are (0 to 4, always defined),
    shape       - the kind of the shape whose colour is present exactly once,
    left        - which of two kinds, each present exactly once, is further left, when their centres are at
                  least 15% of the image width apart (both orders of naming the two kinds are asked).
  Answers are one word or one digit. The prompt is the model's chat template with one <|image|> before the
  question; the answer ends with the end-of-turn token (that part lives in the chat template, not here).
`sample` draws a fresh question with language and type uniform (what `minivlm.tiny.eval` measures on).
Everything is drawn from a `random.Random`, so a seed fixes the data.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

COLORS: dict[str, RGB] = {
    "red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 80, 220), "yellow": (240, 200, 20)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, RGB] = {"white": (255, 255, 255), "grey": (235, 235, 235)}
LANGUAGES: tuple[str, ...] = ("en", "de", "es", "zh")
QTYPES: tuple[str, ...] = ("color", "count", "count_color", "shape", "left")
COUNT_TYPES: tuple[str, ...] = ("count", "count_color")

MIN_SIDE, MAX_SIDE = 128, 640  # image width and height range, inclusive
MIN_PCT, MAX_PCT = 15, 30  # shape bbox side as a percentage of the shorter image side
MAX_SHAPES = 4
LEFT_PCT = 15  # "left" is asked only when the two centres are at least this % of the width apart
SHARE_P = 0.6  # chance that a scene of 2+ shapes gets a group of identical ones (with chance: ~52% of scenes)
GAP = 4  # minimum pixels between two shapes' bounding boxes, so shapes never touch
MARGIN = 2  # keep shapes off the border: the image corners are always background

# Question templates: color and count questions are keyed by kind, count_color and shape questions by colour.
COLOR_QUESTIONS: dict[str, dict[str, str]] = {
    "en": {"circle": "What color is the circle?", "square": "What color is the square?",
           "triangle": "What color is the triangle?"},
    "de": {"circle": "Welche Farbe hat der Kreis?", "square": "Welche Farbe hat das Quadrat?",
           "triangle": "Welche Farbe hat das Dreieck?"},
    "es": {"circle": "¿De qué color es el círculo?", "square": "¿De qué color es el cuadrado?",
           "triangle": "¿De qué color es el triángulo?"},
    "zh": {"circle": "圆形是什么颜色？", "square": "正方形是什么颜色？", "triangle": "三角形是什么颜色？"},
}
COUNT_QUESTIONS: dict[str, dict[str, str]] = {
    "en": {"circle": "How many circles are there?", "square": "How many squares are there?",
           "triangle": "How many triangles are there?"},
    "de": {"circle": "Wie viele Kreise gibt es?", "square": "Wie viele Quadrate gibt es?",
           "triangle": "Wie viele Dreiecke gibt es?"},
    "es": {"circle": "¿Cuántos círculos hay?", "square": "¿Cuántos cuadrados hay?",
           "triangle": "¿Cuántos triángulos hay?"},
    "zh": {"circle": "有几个圆形？", "square": "有几个正方形？", "triangle": "有几个三角形？"},
}
# The adjectives agree with "Formen" (German plural) and "figuras" (Spanish, feminine plural).
COUNT_COLOR_QUESTIONS: dict[str, dict[str, str]] = {
    "en": {"red": "How many red shapes are there?", "green": "How many green shapes are there?",
           "blue": "How many blue shapes are there?", "yellow": "How many yellow shapes are there?"},
    "de": {"red": "Wie viele rote Formen gibt es?", "green": "Wie viele grüne Formen gibt es?",
           "blue": "Wie viele blaue Formen gibt es?", "yellow": "Wie viele gelbe Formen gibt es?"},
    "es": {"red": "¿Cuántas figuras rojas hay?", "green": "¿Cuántas figuras verdes hay?",
           "blue": "¿Cuántas figuras azules hay?", "yellow": "¿Cuántas figuras amarillas hay?"},
    "zh": {"red": "有几个红色的图形？", "green": "有几个绿色的图形？", "blue": "有几个蓝色的图形？",
           "yellow": "有几个黄色的图形？"},
}
SHAPE_QUESTIONS: dict[str, dict[str, str]] = {
    "en": {"red": "What shape is red?", "green": "What shape is green?", "blue": "What shape is blue?",
           "yellow": "What shape is yellow?"},
    "de": {"red": "Welche Form ist rot?", "green": "Welche Form ist grün?", "blue": "Welche Form ist blau?",
           "yellow": "Welche Form ist gelb?"},
    # Spanish agrees the adjective with "figura" (feminine) in the question; answers stay masculine.
    "es": {"red": "¿Qué figura es roja?", "green": "¿Qué figura es verde?", "blue": "¿Qué figura es azul?",
           "yellow": "¿Qué figura es amarilla?"},
    "zh": {"red": "红色的是什么形状？", "green": "绿色的是什么形状？", "blue": "蓝色的是什么形状？",
           "yellow": "黄色的是什么形状？"},
}
# "Which is further left, A or B?": a template per language, filled with the kinds as named in a sentence.
LEFT_QUESTIONS: dict[str, str] = {
    "en": "Which is further left, {a} or {b}?",
    "de": "Was ist weiter links, {a} oder {b}?",
    "es": "¿Qué está más a la izquierda, {a} o {b}?",
    "zh": "{a}和{b}，哪个更靠左？",
}
LEFT_NAMES: dict[str, dict[str, str]] = {
    "en": {"circle": "the circle", "square": "the square", "triangle": "the triangle"},
    "de": {"circle": "der Kreis", "square": "das Quadrat", "triangle": "das Dreieck"},
    "es": {"circle": "el círculo", "square": "el cuadrado", "triangle": "el triángulo"},
    "zh": {"circle": "圆形", "square": "正方形", "triangle": "三角形"},
}
COLOR_ANSWERS: dict[str, dict[str, str]] = {
    "en": {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow"},
    "de": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb"},
    "es": {"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo"},
    "zh": {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"},
}
SHAPE_ANSWERS: dict[str, dict[str, str]] = {
    "en": {"circle": "circle", "square": "square", "triangle": "triangle"},
    "de": {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck"},
    "es": {"circle": "círculo", "square": "cuadrado", "triangle": "triángulo"},
    "zh": {"circle": "圆形", "square": "正方形", "triangle": "三角形"},
}


@dataclass(frozen=True)
class Shape:
    kind: str  # one of SHAPES
    color: str  # a key of COLORS
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive; always square


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: RGB
    shapes: list[Shape]


@dataclass(frozen=True)
class QA:
    language: str  # one of LANGUAGES
    qtype: str  # one of QTYPES
    question: str
    answer: str
    # What is asked about: (kind,) for color and count, (colour,) for count_color and shape, the two kinds in
    # SHAPES order for left. (qtype, about) names a fact: both orders of a "left" question are one fact.
    about: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------ scenes

def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """True when the boxes are separated by at least GAP pixels along some axis."""
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _place(rng: random.Random, width: int, height: int, sides: list[int]) -> list[tuple[int, int, int, int]] | None:
    """Rejection-sample boxes that do not touch; None if this layout keeps failing (the caller redraws)."""
    boxes: list[tuple[int, int, int, int]] = []
    for side in sides:
        for _ in range(100):
            x0 = rng.randint(MARGIN, width - MARGIN - side)
            y0 = rng.randint(MARGIN, height - MARGIN - side)
            box = (x0, y0, x0 + side, y0 + side)
            if all(_apart(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def scene_with(rng: random.Random, n_shapes: int, group: int = 1,
               looks: list[tuple[str, str]] | None = None,
               draw_size: Callable[[random.Random], tuple[int, int]] | None = None) -> Scene:
    """A random scene of `n_shapes` shapes, the first `group` of them of one kind and one colour (group 1:
    every shape's kind and colour drawn independently, which may still repeat by chance), or, given `looks`,
    of those (kind, colour) pairs. Size, background and layout are drawn as the task says (the size by
    `draw_size(rng)` -> (width, height) when given, for training data that over-draws some shapes of image);
    a layout that does not fit is redrawn."""
    assert 1 <= group <= n_shapes <= MAX_SHAPES and (looks is None or len(looks) == n_shapes)
    while True:
        if draw_size is None:
            width, height = rng.randint(MIN_SIDE, MAX_SIDE), rng.randint(MIN_SIDE, MAX_SIDE)
        else:
            width, height = draw_size(rng)
            assert MIN_SIDE <= min(width, height) <= max(width, height) <= MAX_SIDE, (width, height)
        short = min(width, height)
        # Integer sides within [MIN_PCT, MAX_PCT] % of the shorter side (integer maths: no float rounding).
        lo, hi = (short * MIN_PCT + 99) // 100, short * MAX_PCT // 100
        boxes = _place(rng, width, height, [rng.randint(lo, hi) for _ in range(n_shapes)])
        if boxes is not None:
            break
    background = BACKGROUNDS[rng.choice(list(BACKGROUNDS))]
    if looks is None:
        same = (rng.choice(SHAPES), rng.choice(list(COLORS)))
        looks = [same] * group + [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(n_shapes - group)]
    return Scene(width, height, background, [Shape(kind, color, box) for (kind, color), box in zip(looks, boxes)])


def draw_scene(rng: random.Random) -> Scene:
    """A scene of the task: 1-4 shapes (uniform); a scene of 2+ shapes gets, with chance SHARE_P, a group of
    2..n identical shapes (size uniform). With the repeats that independent draws make by chance, about 52%
    of scenes then hold identical shapes (the task asks for at least a third): "three red squares" is common."""
    n = rng.randint(1, MAX_SHAPES)
    group = rng.randint(2, n) if n >= 2 and rng.random() < SHARE_P else 1
    return scene_with(rng, n, group)


def has_identical_shapes(scene: Scene) -> bool:
    """Do two or more shapes share both kind and colour?"""
    looks = [(s.kind, s.color) for s in scene.shapes]
    return len(set(looks)) < len(looks)


# ------------------------------------------------------------------------------------------------ pixels

def _draw(draw: ImageDraw.ImageDraw, shape: Shape, fill) -> None:
    x0, y0, x1, y1 = shape.bbox
    box = (x0, y0, x1 - 1, y1 - 1)  # PIL boxes include their far edge
    if shape.kind == "circle":
        draw.ellipse(box, fill=fill)
    elif shape.kind == "square":
        draw.rectangle(box, fill=fill)
    else:  # upright triangle: base along the bottom, apex top-centre (base = height: near-equilateral)
        draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=fill)


def render(scene: Scene) -> Image.Image:
    """Draw the scene without anti-aliasing, so every pixel is exactly the background or a shape colour."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw(draw, shape, COLORS[shape.color])
    return image


def shape_class(shape: Shape) -> int:
    """1..12: colour-major index of (colour, kind); 0 is the background."""
    return 1 + list(COLORS).index(shape.color) * len(SHAPES) + SHAPES.index(shape.kind)


def label_map(scene: Scene) -> Image.Image:
    """The scene drawn with `shape_class` values instead of colours ("L" mode, background 0): which shape
    covers each pixel. Stage 0 uses it for dense per-cell targets (`minivlm.tiny.pretrain`)."""
    image = Image.new("L", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw(draw, shape, shape_class(shape))
    return image


# ------------------------------------------------------------------------------------------------ questions

def _far_apart(a: Shape, b: Shape, width: int) -> bool:
    """Centres at least LEFT_PCT % of the width apart horizontally (doubled centres: integer maths)."""
    return abs((a.bbox[0] + a.bbox[2]) - (b.bbox[0] + b.bbox[2])) * 100 >= 2 * LEFT_PCT * width


def left_question(language: str, a: str, b: str) -> str:
    """'Which is further left, the <a> or the <b>?' in `language`, for kinds a and b."""
    names = LEFT_NAMES[language]
    return LEFT_QUESTIONS[language].format(a=names[a], b=names[b])


def questions(scene: Scene) -> list[QA]:
    """Every question whose answer is defined for this scene, in every language (each language lists the
    same facts in the same order: color, count, count_color, shape, left)."""
    kinds = [s.kind for s in scene.shapes]
    colors = [s.color for s in scene.shapes]
    once = {s.kind: s for s in scene.shapes if kinds.count(s.kind) == 1}  # kind -> its only shape
    out: list[QA] = []
    for lang in LANGUAGES:
        for s in scene.shapes:
            if kinds.count(s.kind) == 1:
                out.append(QA(lang, "color", COLOR_QUESTIONS[lang][s.kind], COLOR_ANSWERS[lang][s.color], (s.kind,)))
        for kind in SHAPES:
            out.append(QA(lang, "count", COUNT_QUESTIONS[lang][kind], str(kinds.count(kind)), (kind,)))
        for color in COLORS:
            out.append(QA(lang, "count_color", COUNT_COLOR_QUESTIONS[lang][color], str(colors.count(color)),
                          (color,)))
        for s in scene.shapes:
            if colors.count(s.color) == 1:
                out.append(QA(lang, "shape", SHAPE_QUESTIONS[lang][s.color], SHAPE_ANSWERS[lang][s.kind], (s.color,)))
        for a, b in permutations(SHAPES, 2):
            if a in once and b in once and _far_apart(once[a], once[b], scene.width):
                left = min(once[a], once[b], key=lambda s: s.bbox[0] + s.bbox[2])
                pair = tuple(k for k in SHAPES if k in (a, b))
                out.append(QA(lang, "left", left_question(lang, a, b), SHAPE_ANSWERS[lang][left.kind], pair))
    return out


def sample_scene(rng: random.Random) -> tuple[Scene, QA]:
    """A fresh question and its scene: the language uniform over the four and the type uniform over the
    five, then scenes of the task (`draw_scene`) until one defines that type, and a question uniform among
    that scene's questions of the type. Why the type first: drawing the scene first and then a type it can
    answer makes "left" (defined in about one scene in six) only 2% of the questions, too few to measure."""
    language, qtype = rng.choice(LANGUAGES), rng.choice(QTYPES)
    while True:
        scene = draw_scene(rng)
        qas = [q for q in questions(scene) if q.language == language and q.qtype == qtype]
        if qas:
            return scene, rng.choice(qas)


def sample(rng: random.Random) -> tuple[Image.Image, QA]:
    """One example, `sample_scene` rendered: every (language, type) cell is 1/20 of the examples."""
    scene, qa = sample_scene(rng)
    return render(scene), qa


def all_texts() -> list[str]:
    """Every question and answer string of the task, once each, in a fixed order (the tokenizer corpus)."""
    texts: list[str] = []
    for table in (COLOR_QUESTIONS, COUNT_QUESTIONS, COUNT_COLOR_QUESTIONS, SHAPE_QUESTIONS, COLOR_ANSWERS,
                  SHAPE_ANSWERS):
        for lang in LANGUAGES:
            texts.extend(table[lang].values())
    texts.extend(left_question(lang, a, b) for lang in LANGUAGES for a, b in permutations(SHAPES, 2))
    texts.extend(str(d) for d in range(MAX_SHAPES + 1))
    return texts
