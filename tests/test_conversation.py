"""conversation.py: a follow-up question prefills only its new tokens and encodes each image once, and answers
exactly what `vlm.chat` on the whole history answers (tokens equal; step logits within 1e-5 in float32)."""

import pytest
from conftest import FIXTURE_DIR, assert_close

import minivlm
from minivlm.core.decoder import KVCache
from minivlm.tiny import DEMO_DIR
from minivlm.vlm import INITIAL_ANSWER_ROOM

IMAGES = FIXTURE_DIR / "images"


@pytest.fixture(scope="module")
def demo() -> minivlm.VLM:
    return minivlm.load(DEMO_DIR)


def count_encoded_crops(vlm, monkeypatch) -> list[int]:
    """Record how many crops each call of vlm.encode_images encodes."""
    calls, original = [], vlm.encode_images
    monkeypatch.setattr(vlm, "encode_images", lambda batch: calls.append(len(batch["images"])) or original(batch))
    return calls


def assert_same_as_whole_history(vlm, conv, result, max_new_tokens):
    whole = vlm.chat(conv.messages[:-1], conv.images, max_new_tokens=max_new_tokens, return_logits=True)
    assert result.token_ids == whole.token_ids and result.prompt_tokens == whole.prompt_tokens
    assert_close(result.step_logits, whole.step_logits, "conversation vs whole history")


def test_fixture_turns_with_images_equal_the_whole_history(vlm, monkeypatch):
    conv = vlm.conversation(max_new_tokens=6, return_logits=True)
    encoded = count_encoded_crops(vlm, monkeypatch)  # vlm.chat encodes in core, not through this method
    first = conv.ask("Describe this.", images=[IMAGES / "rgb_378x378.png"])
    assert_same_as_whole_history(vlm, conv, first, 6)
    assert encoded == [2] and first.timings["prefill_tokens"] == first.prompt_tokens

    follow = conv.ask("And this one, <|image|> here?", images=[IMAGES / "rgba_500x300.png"])
    assert_same_as_whole_history(vlm, conv, follow, 6)
    assert encoded == [2, 3]  # only the new image's crops: the first image is not encoded again
    assert follow.timings["prefill_tokens"] < follow.prompt_tokens - first.prompt_tokens + 10  # turn 1: cached

    text_only = conv.ask("Which one is larger?")
    assert_same_as_whole_history(vlm, conv, text_only, 6)
    assert encoded == [2, 3] and text_only.timings["prefill_tokens"] < 40
    assert [m["role"] for m in conv.messages] == ["user", "assistant"] * 3


def test_demo_model_follow_up(demo):
    conv = demo.conversation(max_new_tokens=10, return_logits=True)
    first = conv.ask("What color is the circle?", images=[DEMO_DIR / "example.png"])
    assert first.text == "green"
    follow = conv.ask("What shape is green?")
    assert_same_as_whole_history(demo, conv, follow, 10)
    assert follow.text == "circle"
    assert follow.timings["prefill_tokens"] < 30 and follow.timings["vision_s"] < 0.01
    assert conv.cached_tokens == follow.prompt_tokens + len(follow.token_ids) - 1  # the last token is not cached
    conv.reset()
    assert conv.messages == [] and conv.cached_tokens == 0
    assert conv.ask("What color is the circle?", images=[DEMO_DIR / "example.png"]).text == "green"


def test_interrupted_answer_is_kept_and_the_conversation_goes_on(vlm):
    conv = vlm.conversation(max_new_tokens=6, return_logits=True, stop_ids=[])
    pieces = []

    def stop_after_two(piece):
        pieces.append(piece)
        if len(pieces) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        conv.ask("Describe this.", images=[IMAGES / "rgb_378x378.png"], on_text=stop_after_two)
    assert [m["role"] for m in conv.messages] == ["user", "assistant"] and len(conv.images) == 1
    follow = conv.ask("Go on.")
    whole = vlm.chat(conv.messages[:-1], conv.images, max_new_tokens=6, stop_ids=[], return_logits=True)
    assert follow.token_ids == whole.token_ids
    assert_close(follow.step_logits, whole.step_logits, "after an interrupted answer")


def test_bad_use_is_refused(vlm):
    with pytest.raises(ValueError, match="unknown generation setting"):
        vlm.conversation(max_tokens=5)
    with pytest.raises(ValueError, match="temperature"):
        vlm.conversation(temperature=-1)
    conv = vlm.conversation(max_new_tokens=2)
    with pytest.raises(ValueError, match="2 <\\|image\\|> placeholder"):
        conv.ask("<|image|> and <|image|>", images=[IMAGES / "rgb_378x378.png"])
    assert conv.messages == []
    with pytest.raises(ValueError, match="exceeds the model's maximum sequence length"):
        conv.ask("Describe this.", images=[IMAGES / "rgb_378x378.png"], max_new_tokens=10**6)
    assert conv.messages == [] and conv.images == []
    # A refused turn leaves nothing behind: not its image's tiles either.
    other = conv.ask("Describe this.", images=[IMAGES / "rgba_500x300.png"], return_logits=True)
    alone = vlm.chat([{"role": "user", "content": "Describe this."}], [IMAGES / "rgba_500x300.png"], max_new_tokens=2,
                     return_logits=True)
    assert other.token_ids == alone.token_ids and other.prompt_tokens == alone.prompt_tokens


def test_first_turn_allocates_its_cache_once(vlm, monkeypatch):
    """The first turn's KV cache is allocated once, for the prompt and the answer's first room: not at the size of
    the prompt and then copied into a larger one."""
    grown, real_reserve = [], KVCache.reserve

    def reserve(cache, length):
        before = cache.capacity
        real_reserve(cache, length)
        if cache.capacity != before:
            grown.append((before, cache.capacity))

    monkeypatch.setattr(KVCache, "reserve", reserve)
    conv = vlm.conversation(max_new_tokens=3)
    first = conv.ask("Describe this.", images=[IMAGES / "rgb_378x378.png"])
    room = first.prompt_tokens + min(3, INITIAL_ANSWER_ROOM)
    assert grown == [(0, room)] and conv._cache.capacity == room
