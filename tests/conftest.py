"""Shared test data: the jvlm-tiny checkpoint and the official implementation's golden outputs for it.

tests/fixtures/jvlm-tiny is a copy of the project's fixture set: a random-weight Jina-VLM in the real
checkpoint format, with what the official Hugging Face code (float32, eager attention) produced for 12 cases.

Tolerances: float32 results are compared with allclose(rtol=1e-5, atol=1e-5): the same arithmetic summed in
another order (another matrix library path) differs by float32 rounding over a few layers, and for scale the
official code's own eager and sdpa attention differ by up to 8.6e-6 on these tensors. Integers are exact.
"""

import json
from functools import cache
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import minivlm

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "jvlm-tiny"
CASES = json.loads((FIXTURE_DIR / "cases.json").read_text(encoding="utf-8"))["cases"]
IMAGE_CASES = [c for c in CASES if c["images"]]
RTOL = ATOL = 1e-5


@cache
def golden() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE_DIR / "golden.safetensors")


def case_images(case: dict) -> list[Image.Image]:
    """The case's images, opened with PIL as-is (no EXIF handling), as the fixtures were made."""
    return [Image.open(FIXTURE_DIR / image["file"]) for image in case["images"]]


def case_id(case: dict) -> str:
    return case["name"]


@pytest.fixture
def record_flash_enabled(monkeypatch):
    """A function that starts a spy on `F.scaled_dot_product_attention`: from then on each call records whether
    the flash backend is enabled (False under `sdpa_kernel(SDPBackend.MATH)`) into the list it returns, and runs
    the real function. Tests of the `attention` settings call it between the run with PyTorch's pick and theirs."""

    def start() -> list[bool]:
        flash_enabled, sdpa = [], torch.nn.functional.scaled_dot_product_attention

        def spy(*args, **kwargs):
            flash_enabled.append(torch.backends.cuda.flash_sdp_enabled())
            return sdpa(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
        return flash_enabled

    return start


@pytest.fixture(scope="session")
def vlm() -> minivlm.VLM:
    return minivlm.load(FIXTURE_DIR)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual.float(), expected.float(), rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


def assert_sum_close(values: torch.Tensor, expected_sum: torch.Tensor, what: str) -> None:
    """Per-crop sums of a tensor whose full golden copy was not stored.

    If every element were within atol + rtol·|x|, each crop's sum would be within n·atol + rtol·Σ|x|: we check
    exactly that bound, the weakest the element tolerance allows, and nothing looser.
    """
    per_crop = values.double().flatten(1)
    bound = per_crop.shape[1] * ATOL + RTOL * per_crop.abs().sum(1)
    error = (per_crop.sum(1) - expected_sum).abs()
    assert (error <= bound).all(), f"{what}: sum error {error.max():.3g} over its bound {bound[error.argmax()]:.3g}"


def assert_sumsq_close(values: torch.Tensor, expected_sumsq: torch.Tensor, what: str) -> None:
    """Per-crop sums of squares: |x² - y²| = |x - y|·|x + y| <= e·(2|x| + e) with e = atol + rtol·|x|."""
    per_crop = values.double().flatten(1)
    e = ATOL + RTOL * per_crop.abs()
    bound = (e * (2 * per_crop.abs() + e)).sum(1)
    error = (per_crop.square().sum(1) - expected_sumsq).abs()
    assert (error <= bound).all(), f"{what}: sumsq error {error.max():.3g} over its bound {bound[error.argmax()]:.3g}"


def features_for(vlm: minivlm.VLM, case: dict) -> tuple[dict, torch.Tensor]:
    """A case's preprocessed sample and its ViT features [crops, 729, 2 x width] (the connector's input)."""
    from minivlm.core.vit import vit_features

    sample = vlm.preprocess(case["prompt"], case_images(case))
    return sample, vit_features(sample["images"], vlm.weights, vlm.cfg.vision)


def demo_answers(vlm: minivlm.VLM) -> list[list[int]]:
    """Greedy token ids (8 at most) of four questions about the demo model's example image, which it tiles
    (thumbnail + tiles): what the fast-path tests compare with the plain path."""
    from minivlm.formats.image_io import open_image
    from minivlm.tiny import DEMO_DIR

    image = open_image(DEMO_DIR / "example.png")
    questions = ("What color is the circle?", "How many triangles are there?", "What shape is red?",
                 "Which is further left, the circle or the square?")
    prompts = [vlm.render_chat([{"role": "user", "content": q}], 1) for q in questions]
    return [vlm.generate(p, [image], max_new_tokens=8).token_ids for p in prompts]
