"""The data side of the trainer: both JSONL formats, the assistant-only loss mask, bad records, batch draws."""

from __future__ import annotations


import pytest

from minivlm.core.config import with_max_crops
from minivlm.formats.chat import load_chat_template
from minivlm.formats.config_json import load_config
from minivlm.formats.tokenizer import Tokenizer
from minivlm.train.data import DataError, Encoder, Source, normalize, read_jsonl, step_draws

from train_helpers import FIXTURE, RECORDS, data, write_jsonl  # noqa: F401,F811 (data: a fixture)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    cfg = with_max_crops(load_config(FIXTURE), 1)
    return Encoder(Tokenizer(FIXTURE), cfg, load_chat_template(FIXTURE), 10_000, cfg.always_start_with_space)


def answers(record: dict) -> list[str]:
    if "conversations" in record:
        return [t["value"] for t in record["conversations"] if t["from"] == "gpt"]
    return [m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
            for m in record["messages"] if m["role"] == "assistant"]


@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_loss_covers_exactly_the_assistant_tokens(encoder, data, index):
    """LLaVA and chat formats, single and multi-turn, with and without images, with a system prompt: the
    targets are exactly each answer's tokens plus its <|im_end|>, each at the position before it."""
    record = read_jsonl(data, "error")[index]
    sample = encoder(record)
    ids, targets = sample["input_ids"], sample["targets"]
    tok = encoder.tokenizer
    expected = [i for a in answers(RECORDS[index]) for i in tok.encode(a) + [tok.token_id("<|im_end|>")]]
    assert targets[targets >= 0].tolist() == expected
    positions = (targets >= 0).nonzero().flatten()
    assert (ids[positions + 1] == targets[positions]).all()
    assert len(sample["images"]) == (2 if "image" in RECORDS[index] or "images" in RECORDS[index] else 0)


def test_llava_marker_and_relative_image_path(data):
    record = read_jsonl(data, "error")[0]
    assert record.images == [data.parent / "images" / "box.png"]
    assert record.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]
    assert record.where == f"{data}:1"


def test_bad_records_are_reported_with_file_and_line_then_skipped_or_fatal(tmp_path, capsys):
    good = RECORDS[2]
    path = write_jsonl(tmp_path / "bad.jsonl", [
        good,
        {"messages": [{"role": "user", "content": "no answer"}]},
        "{not json",
        {"image": "missing.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]},
        {"text": "neither format"},
    ])
    assert len(read_jsonl(path, "skip")) == 1
    err = capsys.readouterr().err
    for line, reason in ((2, "no assistant turn"), (3, "not valid JSON"), (4, "not found"), (5, "expected 'conversations'")):
        assert f"{path}:{line}: " in err and reason in err
    with pytest.raises(DataError, match=f"{path}:2: no assistant turn"):
        read_jsonl(path, "error")


def test_broken_image_and_too_long_fail_at_encoding(encoder, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    record = normalize({"image": "broken.png", "conversations": [{"from": "human", "value": "<image>Q"},
                                                                 {"from": "gpt", "value": "A"}]}, "x.jsonl:7", tmp_path)
    with pytest.raises(DataError, match="x.jsonl:7: "):
        encoder(record)
    long = normalize({"messages": [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"}]},
                     "x.jsonl:8", tmp_path)
    short = Encoder(encoder.tokenizer, encoder.cfg, encoder.template, 20)
    with pytest.raises(DataError, match="x.jsonl:8: .* over max_length 20"):
        short(long)


def test_batch_draws_depend_on_seed_and_step_only():
    a, b, t = Source("a", 1.0), Source("b", 3.0), Source("t", 1.0, text_only=True)
    draws = step_draws([a, b, t], 0.25, False, seed=1, step=5, batch=400)
    assert draws == step_draws([a, b, t], 0.25, False, seed=1, step=5, batch=400)
    share = sum(s is t for s, _ in draws) / len(draws)
    assert 0.18 < share < 0.32  # the text-only share
    assert 2 < sum(s is b for s, _ in draws) / sum(s is a for s, _ in draws) < 4.5  # the weights
    for step in range(10):  # single-source batches
        assert len({s.name for s, _ in step_draws([a, b], None, True, 1, step, 16)}) == 1
    assert len({seed for _, seed in draws}) == len(draws)
