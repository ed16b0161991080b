"""A synthetic multilingual visual question answering task: coloured shapes on a plain background.

Why it exists: minivlm ships an embedded demo model small enough to train from scratch on a CPU, so
`make demo` runs offline and still answers correctly. That model is trained on this task, following the
paper's two training stages at toy scale (alignment, then instruction tuning), and so is its tokenizer
(`minivlm.tiny.tokenizer`), built from the question and answer strings defined here.

The task: an image of 128-512 px per side, white or light grey, holds 1 to 3 filled, non-overlapping
shapes (circle, axis-aligned square, upright triangle), each red, green, blue or yellow, with a bounding
box side of 20-35% of the shorter image side. Questions come in English, German, Spanish and Chinese and
are asked only when their answer is unique:
  color - the colour of a shape kind present exactly once,
  count - how many shapes of a kind there are (0 to 3, always answerable),
  shape - the kind of the shape whose colour is present exactly once.
Answers are one word or one digit. Everything is drawn from a `random.Random`, so a seed fixes the data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

COLORS: dict[str, RGB] = {
    "red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 80, 220), "yellow": (240, 200, 20)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, RGB] = {"white": (255, 255, 255), "grey": (235, 235, 235)}
LANGUAGES: tuple[str, ...] = ("en", "de", "es", "zh")
QTYPES: tuple[str, ...] = ("color", "count", "shape")

MIN_SIDE, MAX_SIDE = 128, 512  # image width and height range, inclusive
MIN_PCT, MAX_PCT = 20, 35  # shape bbox side as a percentage of the shorter image side
GAP = 4  # minimum pixels between two shapes' bounding boxes, so shapes never touch
MARGIN = 2  # keep shapes off the border: the image corners are always background

# Question templates: color questions are keyed by shape, count questions by shape, shape questions by colour.
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


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """True when the boxes are separated by at least GAP pixels along some axis."""
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _place(rng: random.Random, width: int, height: int, sides: list[int]) -> list[tuple[int, int, int, int]] | None:
    """Rejection-sample non-overlapping boxes; None if this layout keeps failing (the caller redraws)."""
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


def draw_scene(rng: random.Random) -> Scene:
    """A random scene; every field comes from `rng`, so a seeded rng gives the same scene."""
    while True:
        width, height = rng.randint(MIN_SIDE, MAX_SIDE), rng.randint(MIN_SIDE, MAX_SIDE)
        short = min(width, height)
        # Integer sides within [MIN_PCT, MAX_PCT] % of the shorter side (integer maths: no float rounding).
        lo, hi = (short * MIN_PCT + 99) // 100, short * MAX_PCT // 100
        n = rng.randint(1, 3)
        sides = [rng.randint(lo, hi) for _ in range(n)]
        boxes = _place(rng, width, height, sides)
        if boxes is None:
            continue
        background = BACKGROUNDS[rng.choice(list(BACKGROUNDS))]
        shapes = [Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), box) for box in boxes]
        return Scene(width, height, background, shapes)


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
    covers each pixel. Training uses it for dense per-cell targets (`minivlm.tiny.train`)."""
    image = Image.new("L", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw(draw, shape, shape_class(shape))
    return image


def questions(scene: Scene) -> list[QA]:
    """Every question with a unique answer for this scene, in every language."""
    kinds = [s.kind for s in scene.shapes]
    colors = [s.color for s in scene.shapes]
    out: list[QA] = []
    for lang in LANGUAGES:
        for s in scene.shapes:
            if kinds.count(s.kind) == 1:
                out.append(QA(lang, "color", COLOR_QUESTIONS[lang][s.kind], COLOR_ANSWERS[lang][s.color]))
        for kind in SHAPES:
            out.append(QA(lang, "count", COUNT_QUESTIONS[lang][kind], str(kinds.count(kind))))
        for s in scene.shapes:
            if colors.count(s.color) == 1:
                out.append(QA(lang, "shape", SHAPE_QUESTIONS[lang][s.color], SHAPE_ANSWERS[lang][s.kind]))
    return out


def sample(rng: random.Random) -> tuple[Image.Image, QA]:
    """One training example. Language is uniform; the question type is uniform over the types this scene
    can answer (count always can), so all 4 x 3 (language, type) cells are well represented."""
    scene = draw_scene(rng)
    qas = questions(scene)
    lang = rng.choice(LANGUAGES)
    qtype = rng.choice([t for t in QTYPES if any(q.qtype == t for q in qas)])
    qa = rng.choice([q for q in qas if q.language == lang and q.qtype == qtype])
    return render(scene), qa


def all_texts() -> list[str]:
    """Every question and answer string of the task, once each, in a fixed order (the tokenizer corpus)."""
    texts: list[str] = []
    for table in (COLOR_QUESTIONS, COUNT_QUESTIONS, SHAPE_QUESTIONS, COLOR_ANSWERS, SHAPE_ANSWERS):
        for lang in LANGUAGES:
            texts.extend(table[lang].values())
    texts.extend(str(d) for d in range(4))
    return texts
