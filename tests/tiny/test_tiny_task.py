"""The synthetic shapes VQA task (minivlm.tiny.task) and its tokenizer (minivlm.tiny.tokenizer).

The allowed questions and answers are typed out here from the task description, not imported, so a
typo in the module's tables fails these tests instead of silently agreeing with itself.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURE_DIR
from tokenizers import Tokenizer

from minivlm.tiny import task as tiny_task
from minivlm.tiny.task import QA, Scene, draw_scene, questions, render, sample
from minivlm.tiny.tokenizer import special_tokens_map, tokenizer_config, train_tokenizer

FIXTURE = FIXTURE_DIR

RGB = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 80, 220), "yellow": (240, 200, 20)}
BACKGROUNDS = {(255, 255, 255), (235, 235, 235)}
KINDS = ("circle", "square", "triangle")

# (language, kind) -> question, typed from the task description.
COLOR_Q = {
    ("en", "circle"): "What color is the circle?", ("en", "square"): "What color is the square?",
    ("en", "triangle"): "What color is the triangle?",
    ("de", "circle"): "Welche Farbe hat der Kreis?", ("de", "square"): "Welche Farbe hat das Quadrat?",
    ("de", "triangle"): "Welche Farbe hat das Dreieck?",
    ("es", "circle"): "¿De qué color es el círculo?", ("es", "square"): "¿De qué color es el cuadrado?",
    ("es", "triangle"): "¿De qué color es el triángulo?",
    ("zh", "circle"): "圆形是什么颜色？", ("zh", "square"): "正方形是什么颜色？", ("zh", "triangle"): "三角形是什么颜色？",
}
COUNT_Q = {
    ("en", "circle"): "How many circles are there?", ("en", "square"): "How many squares are there?",
    ("en", "triangle"): "How many triangles are there?",
    ("de", "circle"): "Wie viele Kreise gibt es?", ("de", "square"): "Wie viele Quadrate gibt es?",
    ("de", "triangle"): "Wie viele Dreiecke gibt es?",
    ("es", "circle"): "¿Cuántos círculos hay?", ("es", "square"): "¿Cuántos cuadrados hay?",
    ("es", "triangle"): "¿Cuántos triángulos hay?",
    ("zh", "circle"): "有几个圆形？", ("zh", "square"): "有几个正方形？", ("zh", "triangle"): "有几个三角形？",
}
# (language, colour) -> question
SHAPE_Q = {
    ("en", "red"): "What shape is red?", ("en", "green"): "What shape is green?",
    ("en", "blue"): "What shape is blue?", ("en", "yellow"): "What shape is yellow?",
    ("de", "red"): "Welche Form ist rot?", ("de", "green"): "Welche Form ist grün?",
    ("de", "blue"): "Welche Form ist blau?", ("de", "yellow"): "Welche Form ist gelb?",
    ("es", "red"): "¿Qué figura es roja?", ("es", "green"): "¿Qué figura es verde?",
    ("es", "blue"): "¿Qué figura es azul?", ("es", "yellow"): "¿Qué figura es amarilla?",
    ("zh", "red"): "红色的是什么形状？", ("zh", "green"): "绿色的是什么形状？",
    ("zh", "blue"): "蓝色的是什么形状？", ("zh", "yellow"): "黄色的是什么形状？",
}
COLOR_A = {
    "en": {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow"},
    "de": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb"},
    "es": {"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo"},
    "zh": {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"},
}
SHAPE_A = {
    "en": {"circle": "circle", "square": "square", "triangle": "triangle"},
    "de": {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck"},
    "es": {"circle": "círculo", "square": "cuadrado", "triangle": "triángulo"},
    "zh": {"circle": "圆形", "square": "正方形", "triangle": "三角形"},
}
ALL_QUESTIONS = set(COLOR_Q.values()) | set(COUNT_Q.values()) | set(SHAPE_Q.values())
ALL_ANSWERS = {a for t in (COLOR_A, SHAPE_A) for d in t.values() for a in d.values()} | {"0", "1", "2", "3"}
IMAGE_TOKENS = ("<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<|image|>", "<im_slice>")


def scenes(n: int = 300, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [draw_scene(rng) for _ in range(n)]


def expected_qas(scene: Scene) -> set[tuple[str, str, str, str]]:
    """Every valid (language, qtype, question, answer), recomputed from the scene with the test's tables."""
    kinds = Counter(s.kind for s in scene.shapes)
    colors = Counter(s.color for s in scene.shapes)
    out = set()
    for lang in ("en", "de", "es", "zh"):
        for kind in KINDS:
            out.add((lang, "count", COUNT_Q[lang, kind], str(kinds[kind])))
        for s in scene.shapes:
            if kinds[s.kind] == 1:
                out.add((lang, "color", COLOR_Q[lang, s.kind], COLOR_A[lang][s.color]))
            if colors[s.color] == 1:
                out.add((lang, "shape", SHAPE_Q[lang, s.color], SHAPE_A[lang][s.kind]))
    return out


# ---------------------------------------------------------------- scenes and images

def test_scene_geometry() -> None:
    for scene in scenes():
        assert 128 <= scene.width <= 512 and 128 <= scene.height <= 512
        assert tuple(scene.background) in BACKGROUNDS
        assert 1 <= len(scene.shapes) <= 3
        short = min(scene.width, scene.height)
        for s in scene.shapes:
            assert s.kind in KINDS and s.color in RGB
            x0, y0, x1, y1 = s.bbox
            assert x1 - x0 == y1 - y0, "bounding boxes are square"
            assert 0.20 * short <= x1 - x0 <= 0.35 * short
            assert 0 <= x0 and 0 <= y0 and x1 <= scene.width and y1 <= scene.height
        for i, a in enumerate(scene.shapes):
            for b in scene.shapes[i + 1:]:
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.bbox, b.bbox
                assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0, "bounding boxes overlap"


def test_render_pixels() -> None:
    for scene in scenes(150, seed=1):
        img = render(scene)
        assert img.mode == "RGB" and img.size == (scene.width, scene.height)
        bg = tuple(scene.background)
        w, h = img.size
        for corner in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
            assert img.getpixel(corner) == bg
        # No anti-aliasing: only the background and the shapes' exact colours appear.
        used = {c for _, c in img.getcolors(maxcolors=16)}
        assert used <= {bg} | {RGB[s.color] for s in scene.shapes}
        for s in scene.shapes:
            x0, y0, x1, y1 = s.bbox
            col = RGB[s.color]
            assert img.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == col
            tl, tr, bl, br = (img.getpixel(p) for p in ((x0, y0), (x1 - 1, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)))
            if s.kind == "square":
                assert tl == tr == bl == br == col
            elif s.kind == "circle":
                assert tl == tr == bl == br == bg
            else:  # upright triangle: base corners filled, top corners empty, apex at the top centre
                assert bl == br == col and tl == tr == bg
                assert img.getpixel(((x0 + x1 - 1) // 2, y0 + 1)) == col


def test_questions_exact_and_correct() -> None:
    for scene in scenes():
        qas = questions(scene)
        got = [(q.language, q.qtype, q.question, q.answer) for q in qas]
        assert len(got) == len(set(got)), "duplicate questions"
        assert set(got) == expected_qas(scene)
        assert all(q.question in ALL_QUESTIONS and q.answer in ALL_ANSWERS for q in qas)


def test_all_listed_strings_are_used() -> None:
    seen_q, seen_a = set(), set()
    for scene in scenes(1000, seed=2):
        for q in questions(scene):
            seen_q.add(q.question)
            seen_a.add(q.answer)
    assert seen_q == ALL_QUESTIONS and seen_a == ALL_ANSWERS


def test_sample_covers_every_language_and_type() -> None:
    rng = random.Random(123)
    cells = Counter()
    for _ in range(400):
        img, qa = sample(rng)
        assert isinstance(qa, QA) and qa.question in ALL_QUESTIONS and qa.answer in ALL_ANSWERS
        assert 128 <= img.width <= 512 and 128 <= img.height <= 512
        cells[qa.language, qa.qtype] += 1
    assert set(cells) == {(lang, t) for lang in ("en", "de", "es", "zh") for t in ("color", "count", "shape")}
    assert min(cells.values()) >= 15, cells  # 400 / 12 = 33 on average


def test_deterministic() -> None:
    def run(seed: int) -> list[tuple[bytes, QA]]:
        rng = random.Random(seed)
        return [(img.tobytes(), qa) for img, qa in (sample(rng) for _ in range(20))]

    assert run(7) == run(7)
    assert run(7) != run(8)


# ---------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def tok1024(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return train_tokenizer(1024, tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module")
def tok512() -> Tokenizer:
    return train_tokenizer(512)


def test_tokenizer_round_trips(tok1024: Tokenizer, tok512: Tokenizer) -> None:
    extra = ["Hello, world!", "Привет 😀 naïve café", " \n\t x", "第一张图片。"]
    for tok in (tok1024, tok512):
        for text in sorted(ALL_QUESTIONS | ALL_ANSWERS) + extra:
            ids = tok.encode(text).ids
            assert tok.decode(ids) == text


def test_tokenizer_special_ids(tok1024: Tokenizer, tok512: Tokenizer) -> None:
    order = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + IMAGE_TOKENS
    for size, tok in ((1024, tok1024), (512, tok512)):
        assert [tok.token_to_id(t) for t in order] == list(range(size - 3, size + 6))
        assert tok.get_vocab_size(with_added_tokens=False) == size - 3
        assert tok.get_vocab_size() == size + 6
        for t in order:
            assert tok.encode(t).ids == [tok.token_to_id(t)]
    # The fixture uses the same layout with embedding_size 512.
    fixture = json.loads((FIXTURE / "tokenizer.json").read_text())
    assert [(a["id"], a["content"]) for a in fixture["added_tokens"]] == \
        [(tok512.token_to_id(t), t) for t in order]


def test_tokenizer_pipeline_matches_fixture(tok512: Tokenizer) -> None:
    fixture = json.loads((FIXTURE / "tokenizer.json").read_text())
    ours = json.loads(tok512.to_str())
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens"):
        assert ours[key] == fixture[key], key
    alphabet = {k for k in fixture["model"]["vocab"] if len(k) == 1}
    assert len(alphabet) == 256 and alphabet <= set(ours["model"]["vocab"])
    assert tokenizer_config(tok512) == json.loads((FIXTURE / "tokenizer_config.json").read_text())
    assert special_tokens_map() == json.loads((FIXTURE / "special_tokens_map.json").read_text())


def test_tokenizer_compact(tok1024: Tokenizer, tok512: Tokenizer) -> None:
    for tok in (tok1024, tok512):
        q_max = max(len(tok.encode(q).ids) for q in ALL_QUESTIONS)
        a_max = max(len(tok.encode(a).ids) for a in ALL_ANSWERS)
        size = tok.get_vocab_size(with_added_tokens=False) + 3
        print(f"vocab {size}: max question {q_max}, answer {a_max} tokens")
        assert q_max <= 12 and a_max <= 3


def test_tokenizer_chat_prompt(tok1024: Tokenizer) -> None:
    q, a = "¿Qué figura es amarilla?", "triángulo"
    prompt = f"<|im_start|>user\n<|image|>{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>"
    ids = tok1024.encode(prompt).ids
    assert tok1024.decode(ids, skip_special_tokens=False) == prompt
    assert ids.count(tok1024.token_to_id("<|image|>")) == 1
    assert tok1024.token_to_id("user") is not None and tok1024.token_to_id("assistant") is not None
    # Padding entries (<|reserved_k|>) are never produced for task text.
    reserved = {i for t, i in tok1024.get_vocab(with_added_tokens=False).items() if t.startswith("<|reserved_")}
    assert reserved and not reserved & set(ids)
    for text in ALL_QUESTIONS | ALL_ANSWERS:
        assert not reserved & set(tok1024.encode(text).ids)


def test_tokenizer_saved_and_deterministic(tok1024: Tokenizer, tmp_path: Path) -> None:
    again = train_tokenizer(1024, tmp_path / "tokenizer.json")
    assert again.to_str() == tok1024.to_str()
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert loaded.encode("Wie viele Dreiecke gibt es?").ids == tok1024.encode("Wie viele Dreiecke gibt es?").ids
    with pytest.raises(ValueError):
        train_tokenizer(200)


def test_module_tables_match_description() -> None:
    # The module exposes the data tables; they must hold exactly the typed strings.
    assert set(tiny_task.COLORS.items()) == set(RGB.items())
    assert set(tiny_task.BACKGROUNDS.values()) == BACKGROUNDS
