"""Generation: greedy tokens and step logits against the official `generate`, the KV cache, batching, bf16,
sampling and streaming."""

import warnings

import pytest
import torch
from conftest import CASES, FIXTURE_DIR, assert_close, case_id, case_images, golden

import minivlm

BF16_LOGIT_ERROR = 0.1  # measured max |bf16 - fp32| step-logit difference on these cases is ~0.05; 2x margin


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_greedy_tokens_and_step_logits(vlm, case):
    g, name = golden(), case["name"]
    # The fixtures were generated with no stop id: always exactly 8 tokens.
    out = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[], return_logits=True)
    assert out.token_ids == g[name + ".gen_ids"].tolist() == case["generated_ids"]
    assert_close(out.step_logits, g[name + ".gen_step_logits"], "step logits")
    assert out.prompt_tokens == case["seq_len"]


@pytest.mark.parametrize("case", [c for c in CASES if c["name"] in ("landscape_1176x910", "text_only", "two_images")],
                         ids=case_id)
def test_kv_cache_equals_full_recompute(vlm, case):
    """Each cached step's logits equal the last row of a full forward over prompt + tokens so far."""
    images = case_images(case)
    out = vlm.generate(case["prompt"], images, max_new_tokens=5, stop_ids=[], return_logits=True)
    prompt = vlm.preprocess(case["prompt"], images)
    for step, token in enumerate(out.token_ids):
        batch = dict(prompt, input_ids=torch.cat([prompt["input_ids"], torch.tensor(out.token_ids[:step], dtype=torch.long)]))
        full = vlm.logits(batch)[-1]
        assert_close(out.step_logits[step], full, f"step {step}")
        assert int(full.argmax()) == token


def test_batch_equals_one_at_a_time(vlm):
    chosen = [c for c in CASES if c["name"] in ("text_only", "single_tile_378", "two_images", "rgba_500x300")]
    texts, images = [c["prompt"] for c in chosen], [case_images(c) for c in chosen]
    together = vlm.generate_batch(texts, images, max_new_tokens=8, stop_ids=[], return_logits=True)
    for case, result in zip(chosen, together):
        alone = vlm.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[], return_logits=True)
        assert result.token_ids == alone.token_ids == case["generated_ids"]
        assert_close(result.step_logits, alone.step_logits, f"{case['name']} batched vs alone")


@pytest.fixture(scope="module")
def vlm_bf16():
    return minivlm.load(FIXTURE_DIR, dtype=torch.bfloat16)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bfloat16_gives_the_float32_tokens(vlm_bf16, case):
    """bf16 moves these logits by up to ~0.05, so a step whose float32 top-1/top-2 margin is below
    BF16_LOGIT_ERROR may legitimately pick the runner-up. At every step we require the bf16 token to be the
    float32 token, or, only at such a close step, a token within BF16_LOGIT_ERROR of the float32 best (then the
    sequences part and the test says so). Measured: all 12 cases give exactly the float32 tokens."""
    step_logits = golden()[case["name"] + ".gen_step_logits"]
    out = vlm_bf16.generate(case["prompt"], case_images(case), max_new_tokens=8, stop_ids=[])
    assert len(out.token_ids) == 8
    for step, (ours, reference) in enumerate(zip(out.token_ids, case["generated_ids"])):
        if ours == reference:
            continue
        logits = step_logits[step]
        assert logits[ours] >= logits.max() - BF16_LOGIT_ERROR, f"step {step}: bf16 picked {ours}, far from {reference}"
        warnings.warn(f"{case['name']}: bf16 parts from float32 at step {step}, a near tie "
                      f"({logits.max() - logits[ours]:.3f} apart); later tokens are not compared")
        break


def test_stops_at_eos(vlm):
    case = next(c for c in CASES if c["name"] == "text_only")
    first = case["generated_ids"][1]
    out = vlm.generate(case["prompt"], max_new_tokens=8, stop_ids=[first])
    assert out.token_ids == case["generated_ids"][:2]


def test_default_stop_id_is_the_tokenizer_eos(vlm):
    assert vlm.stop_ids == [vlm.tokenizer.eos_id]


def test_sampling_is_seeded(vlm):
    case = next(c for c in CASES if c["name"] == "text_only")
    kwargs = dict(max_new_tokens=12, temperature=1.0, top_k=50, top_p=0.9, stop_ids=[])
    a = vlm.generate(case["prompt"], seed=1, **kwargs).token_ids
    assert a == vlm.generate(case["prompt"], seed=1, **kwargs).token_ids
    assert any(vlm.generate(case["prompt"], seed=s, **kwargs).token_ids != a for s in range(2, 6))


@pytest.mark.parametrize("n", [0, -3])
def test_bad_max_new_tokens(vlm, n):
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        vlm.generate("hi", max_new_tokens=n)


def test_streamed_text_is_the_answer(vlm):
    case = next(c for c in CASES if c["name"] == "text_only")
    pieces = []
    out = vlm.generate(case["prompt"], max_new_tokens=8, stop_ids=[], on_text=pieces.append)
    assert "".join(pieces) == out.text


def test_prompt_plus_new_tokens_must_fit(vlm):
    with pytest.raises(ValueError, match="exceeds the model's maximum sequence length of 40960"):
        vlm.generate("hi", max_new_tokens=40_960)


@pytest.mark.parametrize("eos, expected", [(442, [442]), ([442, 509], [442, 509]), ("x", None)])
def test_stop_ids_from_generation_config(tmp_path, eos, expected):
    import json
    import shutil

    for f in FIXTURE_DIR.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    if expected is None:
        with pytest.raises(ValueError, match="generation_config.json: eos_token_id should be an id or a list"):
            minivlm.load(tmp_path)
    else:
        assert minivlm.load(tmp_path).stop_ids == expected
