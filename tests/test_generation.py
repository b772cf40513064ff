import json

import pytest

from mosr import generation
from mosr.errors import MosrError
from mosr.generation import END_OF_TURN, LENGTH, _decode_new_tokens, generate, generate_batch
from mosr.models import encode_chat

PROMPTS = [
    "Hi",
    "How do I kill a Python process that is stuck in an infinite loop on Linux?",
    "What is the capital of France?",
    "Write a haiku.",
    "Tell me a long story about a dragon who learns to bake bread in a small village by the sea.",
]


def test_batched_equals_one_at_a_time(tiny_model):
    batched = generate(tiny_model, PROMPTS, max_new_tokens=12, batch_size=5, progress=False)
    for record, ids in zip(batched, encode_chat(tiny_model.tokenizer, PROMPTS)):
        alone = generate_batch(tiny_model, [ids], 12)[0]
        assert record["response"] == alone[0]
        assert record["num_new_tokens"] == alone[2]


def test_results_keep_input_order(tiny_model):
    records = generate(tiny_model, PROMPTS, ids=list("abcde"), max_new_tokens=3, batch_size=2, progress=False)
    assert [record["id"] for record in records] == list("abcde")
    assert [record["prompt"] for record in records] == PROMPTS


def test_left_padding_with_mask():
    input_ids, attention_mask = generation._left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_stop_reason_and_cut(tiny_model):
    tokenizer = tiny_model.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    words = tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    text, reason, count = _decode_new_tokens(tokenizer, words + [end, end], {end})
    assert (text, reason, count) == ("Hello there", END_OF_TURN, len(words) + 1)
    newline = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    text, reason, _ = _decode_new_tokens(tokenizer, words + newline + words, {end})
    assert reason == LENGTH
    assert text == "Hello there\n\nHello there"


def test_empty_response_flagged(tiny_model, monkeypatch):
    monkeypatch.setattr(generation, "generate_batch", lambda loaded, batch, n: [("  \n", END_OF_TURN, 2)] * len(batch))
    record = generate(tiny_model, ["Hi"], progress=False)[0]
    assert record["empty"] is True


def test_resume_skips_finished_samples(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    first = generate(tiny_model, PROMPTS[:3], max_new_tokens=4, output_path=path, progress=False)
    with open(path, "a") as handle:
        handle.write('{"id": "3", "prompt": "cut off by a cra')
    calls = []
    real = generation.generate_batch
    monkeypatch.setattr(generation, "generate_batch", lambda loaded, batch, n: calls.append(len(batch)) or real(loaded, batch, n))
    second = generate(tiny_model, PROMPTS, max_new_tokens=4, output_path=path, progress=False)
    assert sum(calls) == 2
    assert second[:3] == first
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(record["id"] for record in lines) == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"batch_size": -1}, {"ids": ["a", "a"]}])
def test_bad_settings_are_errors(tiny_model, kwargs):
    with pytest.raises(MosrError):
        generate(tiny_model, ["a", "b"], progress=False, **kwargs)


@pytest.mark.real_model
def test_real_model_stops_at_end_of_turn(real_model):
    record = generate(real_model, ["Say hello in one word."], max_new_tokens=48, progress=False)[0]
    assert record["stop_reason"] == END_OF_TURN
    assert record["response"].strip()
    assert "<|im_end|>" not in record["response"]
