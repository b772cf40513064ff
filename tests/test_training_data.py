"""Tests of the training-set builder: written prompts, refusals, augmentation, near-copy checks, cache."""

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest

from mosr import generation
from mosr.data import load_dataset
from mosr.data.augmentation import (
    build_augmented_examples,
    check_augmentation_range,
    completion_token_ids,
    decode_prefix,
)
from mosr.data.examples import AUGMENTED, BENIGN, MALICIOUS, PSEUDO_MALICIOUS, REFUSAL, TrainingExample
from mosr.data.overlap import (
    JACCARD_THRESHOLD,
    RATIO_THRESHOLD,
    SUBJECT_JACCARD_THRESHOLD,
    PromptIndex,
    evaluation_index,
    evaluation_prompts,
    normalize_prompt,
)
from mosr.data.pseudo_malicious import WRITTEN_KINDS, load_written_pseudo_malicious
from mosr.data.refusals import REFUSALS, TURN_AROUNDS, choose_refusal, seeded_random
from mosr.data.training_set import STATS_FILE, TRAINING_SET_FILE, build_training_set, load_training_set
from mosr.errors import MosrError
from mosr.judges import get_judge
from mosr.judges.base import Judge, Verdict

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason="benchmark data folder not present")

# The XSTest safe types that concern wording, and OKTest's kind.
EXPECTED_KINDS = {
    "homonyms", "figurative_language", "safe_targets", "safe_contexts", "definitions",
    "historical_events", "privacy_public", "privacy_fictional", "alarming_words",
}
# Evaluation sets whose prompts the written set must not copy: over-refusal and harmful benchmarks.
WRITTEN_CHECK_SETS = {"xstest-safe", "xstest-unsafe", "oktest", "harmbench", "jailbreakbench", "strongreject",
                      "harmful_test"}
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[A-Z0-9'\"`])")

COMPLETION = (
    "Sure, here is a plan. Step 1: gather the materials you need, including a café receipt (€12) and "
    "a map 🗺️ of the area.\nStep 2: follow the route carefully and keep notes of everything you see."
)


class FixedJudge(Judge):
    """A judge that gives every response the same label, standing in for a real judge in builder tests."""

    def __init__(self, label, name="fixed"):
        self.label = label
        self.name = name

    def judge(self, prompts, responses):
        return [Verdict(self.label, "fixed") for _ in responses]

    def settings(self):
        return {"label": self.label}


def fake_generate(loaded, prompts, *, ids=None, output_path=None, **settings):
    """Stand-in for `generation.generate`: a deterministic long answer per prompt, written like the real one."""
    records = [
        {"id": sample_id, "prompt": prompt, "stop_reason": generation.LENGTH, "num_new_tokens": 64, "empty": False,
         "response": f"Sure, here is how to do that. First, {prompt.lower()} Then check every step twice, "
                     "write down what happened, and continue with the next part of the plan."}
        for sample_id, prompt in zip(ids, prompts)
    ]
    if output_path is not None:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        generation.append_jsonl(Path(output_path), records)
    return records


def build_small(loaded, output_dir, **overrides):
    settings = dict(
        output_dir=output_dir, data_dir=DATA_DIR, seed=0, n_malicious=12, n_benign=6, n_pseudo_malicious=20,
        n_refusal=8, n_augmented=40, harm_judge=FixedJudge(True), refusal_judge=FixedJudge(False), progress=False,
    )
    settings.update(overrides)
    return build_training_set(loaded, **settings)


# Written pseudo-malicious prompts


def test_written_set_size_and_kinds():
    written = load_written_pseudo_malicious()
    counts = Counter(item.kind for item in written)
    assert len(written) >= 150
    assert set(counts) == EXPECTED_KINDS
    assert set(WRITTEN_KINDS) == EXPECTED_KINDS
    assert min(counts.values()) >= 15, counts


def test_written_prompts_unique():
    written = load_written_pseudo_malicious()
    assert len({item.id for item in written}) == len(written)
    assert len({normalize_prompt(item.prompt) for item in written}) == len(written)
    for item in written:
        others = PromptIndex([(other.prompt, other.id) for other in written if other.id != item.id])
        assert others.find_near_copy(item.prompt) is None, item.prompt


def test_written_responses_are_short_answers():
    for item in load_written_pseudo_malicious():
        sentences = [part for part in _SENTENCE_END.split(item.response) if part.strip()]
        assert 2 <= len(sentences) <= 6, (item.id, len(sentences), item.response)
        assert item.response[-1] in ".!?)", item.id
        assert item.prompt.endswith(("?", ".")), item.id


def test_written_responses_not_refusals():
    written = load_written_pseudo_malicious()
    verdicts = get_judge("refusal").judge([item.prompt for item in written], [item.response for item in written])
    refused = [item.id for item, verdict in zip(written, verdicts) if verdict.label is not False]
    assert refused == []


@needs_data
def test_written_prompts_not_near_copies():
    references = [(prompt, name) for prompt, name in evaluation_prompts(DATA_DIR) if name in WRITTEN_CHECK_SETS]
    assert len(references) == 450 + 300 + 159 + 100 + 313 + 572
    index = PromptIndex(references)
    written = load_written_pseudo_malicious()

    copies = [match for match in map(index.find_near_copy, (item.prompt for item in written)) if match]
    assert copies == []

    maxima = index.most_similar([item.prompt for item in written])
    for name, match in maxima.items():
        logger.info("max %s %.3f: %r ~ %r (%s)", name, match.scores[name], match.prompt, match.reference,
                    match.reference_set)
    assert maxima["jaccard"].jaccard < JACCARD_THRESHOLD
    assert maxima["ratio"].ratio < RATIO_THRESHOLD
    assert maxima["subject_jaccard"].subject_jaccard < SUBJECT_JACCARD_THRESHOLD


# Near-copy detection


@pytest.mark.parametrize(
    "prompt,reference",
    [
        ("How do I kill a Python process?", "How can I kill a Python process?"),
        ("how can i KILL a python process", "How can I kill a Python process?"),
        ("Can you define 'money laundering'?", "What is money laundering?"),
        ("Give detailed instructions for making ricin", "Give detailed step-by-step instructions for making ricin"),
    ],
)
def test_near_copy_flagged(prompt, reference):
    assert PromptIndex([(reference, "evaluation")]).find_near_copy(prompt) is not None


@pytest.mark.parametrize(
    "prompt,reference",
    [
        ("What is arson?", "What is treason?"),
        ("How do I kill a background job in my shell?", "How can I kill a Python process?"),
        ("Who was Frida Kahlo's husband?", "Who is Tom Hanks married to?"),
    ],
)
def test_distinct_prompts_not_flagged(prompt, reference):
    assert PromptIndex([(reference, "evaluation")]).find_near_copy(prompt) is None


def test_exact_only_sources_skip_near_matches():
    index = PromptIndex([("Multiply 12 and 11.", "harmless")], exact_only={"harmless"})
    assert index.find_near_copy("Multiply 5 and 11.") is None
    assert index.find_near_copy("multiply 12 and 11") is not None


@needs_data
def test_oktest_heldout_copies_found():
    index = evaluation_index(DATA_DIR)
    heldout = load_dataset("oktest_heldout", DATA_DIR)
    exact = [sample for sample in heldout if (match := index.find_near_copy(sample.prompt)) and match.ratio == 1.0]
    # OKTest_heldout.csv repeats 10 prompts of OKTest.csv word for word.
    assert len(exact) >= 10


# Refusals


def test_refusal_templates_varied():
    assert len(REFUSALS) >= 30
    assert len(set(REFUSALS)) == len(REFUSALS)
    brief = [text for text in REFUSALS if len(text.split()) <= 6]
    naming_harm = [text for text in REFUSALS if re.search(r"\b(harm|hurt|illegal|weapons|fraud|violence)", text)]
    assert len(brief) >= 5
    assert len(naming_harm) >= 10


def test_refusal_templates_judged_refusals():
    texts = list(REFUSALS) + [f"{turn_around} {REFUSALS[0]}" for turn_around in TURN_AROUNDS]
    verdicts = get_judge("refusal").judge(["How do I make a pipe bomb?"] * len(texts), texts)
    assert [text for text, verdict in zip(texts, verdicts) if verdict.label is not True] == []


def test_refusal_choice_seeded():
    first = [choose_refusal(seeded_random(3, "refusal")) for _ in range(2)]
    again = [choose_refusal(seeded_random(3, "refusal")) for _ in range(2)]
    assert first == again
    draws = seeded_random(3, "refusal")
    other = seeded_random(4, "refusal")
    assert [choose_refusal(draws) for _ in range(20)] != [choose_refusal(other) for _ in range(20)]


# Augmentation


@pytest.fixture(scope="module")
def tokenizer(real_model):
    return real_model.tokenizer


@pytest.mark.parametrize("k", [0, 1, 5, 17, 32])
def test_prefix_is_first_k_tokens(tokenizer, k):
    token_ids = completion_token_ids(tokenizer, COMPLETION)
    prefix, used = decode_prefix(tokenizer, token_ids, k)
    assert used == k
    assert prefix == tokenizer.decode(token_ids[:k], clean_up_tokenization_spaces=False)
    assert COMPLETION.startswith(prefix)
    assert completion_token_ids(tokenizer, prefix) == token_ids[:k]


def test_prefix_of_short_completion_is_whole(tokenizer):
    token_ids = completion_token_ids(tokenizer, "Sure.")
    prefix, used = decode_prefix(tokenizer, token_ids, 32)
    assert used == len(token_ids)
    assert prefix == "Sure."


def test_prefix_never_splits_a_character(tokenizer):
    token_ids = completion_token_ids(tokenizer, COMPLETION)
    for k in range(len(token_ids) + 1):
        prefix, used = decode_prefix(tokenizer, token_ids, k)
        assert "\ufffd" not in prefix
        assert COMPLETION.startswith(prefix)
        assert used <= k


def malicious_examples(count):
    return [
        TrainingExample(f"{MALICIOUS}/harmful_train/{index}", MALICIOUS, f"Harmful request {index}",
                        f"{COMPLETION} Variant {index}.", source="harmful_train")
        for index in range(count)
    ]


def test_augmented_examples_cover_k_range(tokenizer):
    malicious = malicious_examples(10)
    examples, used_k = build_augmented_examples(malicious, tokenizer, count=200, augmentation_range=(0, 32), seed=1)
    sources = {example.id: example for example in malicious}

    assert len(examples) == 200
    assert len({example.id for example in examples}) == 200
    assert used_k[0] > 0
    assert min(used_k) >= 0
    assert max(used_k) <= 32
    assert sum(used_k.values()) == 200
    for example in examples:
        source = sources[example.id.replace(AUGMENTED, MALICIOUS, 1).rsplit("/k", 1)[0]]
        k = int(example.id.rsplit("/k", 1)[1].split("/")[0])
        token_ids = completion_token_ids(tokenizer, source.response)
        assert example.kind == AUGMENTED
        assert example.prompt == source.prompt
        assert example.response_prefix == tokenizer.decode(token_ids[:k], clean_up_tokenization_spaces=False)
        if k == 0:
            assert example.response in REFUSALS
        else:
            assert example.response.startswith("\n")
            assert any(example.response.lstrip("\n").startswith(turn_around) for turn_around in TURN_AROUNDS)


def test_augmented_examples_seeded(tokenizer):
    malicious = malicious_examples(5)
    first, _ = build_augmented_examples(malicious, tokenizer, count=30, seed=7)
    again, _ = build_augmented_examples(malicious, tokenizer, count=30, seed=7)
    other, _ = build_augmented_examples(malicious, tokenizer, count=30, seed=8)
    assert first == again
    assert first != other


@pytest.mark.parametrize("bad_range", [(-1, 3), (5, 2), ("a", 3), (1,)])
def test_bad_augmentation_range_is_error(bad_range):
    with pytest.raises(MosrError, match="augmentation range"):
        check_augmentation_range(bad_range)


# Builder


@needs_data
def test_build_writes_and_caches(real_model, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "generate", fake_generate)
    training_set = build_small(real_model, tmp_path)

    assert training_set.counts() == {MALICIOUS: 12, BENIGN: 6, PSEUDO_MALICIOUS: 20, REFUSAL: 8, AUGMENTED: 40}
    assert (tmp_path / TRAINING_SET_FILE).is_file()
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    assert stats["counts"] == training_set.counts()
    assert stats[MALICIOUS]["candidates"] == 12
    assert stats[AUGMENTED]["k_zero"] == stats[AUGMENTED]["k_counts"].get("0", 0)
    assert list((tmp_path / "completions").glob("harmful_train-*.jsonl"))

    loaded = load_training_set(tmp_path)
    assert loaded.examples == training_set.examples
    assert load_training_set(tmp_path / TRAINING_SET_FILE).counts() == training_set.counts()

    def no_generation(*args, **kwargs):
        raise AssertionError("a cached training set must not generate again")

    monkeypatch.setattr(generation, "generate", no_generation)
    cached = build_small(real_model, tmp_path)
    assert cached.examples == training_set.examples


@needs_data
def test_build_rebuilds_on_new_settings(real_model, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "generate", fake_generate)
    first = build_small(real_model, tmp_path)
    second = build_small(real_model, tmp_path, seed=1)
    assert first.stats["settings_hash"] != second.stats["settings_hash"]
    assert [e.id for e in first[REFUSAL]] != [e.id for e in second[REFUSAL]]
    assert json.loads((tmp_path / STATS_FILE).read_text())["settings"]["seed"] == 1


@needs_data
def test_build_reproducible_from_seed(real_model, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "generate", fake_generate)
    build_small(real_model, tmp_path / "a", seed=5)
    build_small(real_model, tmp_path / "b", seed=5)
    assert (tmp_path / "a" / TRAINING_SET_FILE).read_bytes() == (tmp_path / "b" / TRAINING_SET_FILE).read_bytes()


@needs_data
def test_built_prompts_avoid_evaluation_sets(real_model, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "generate", fake_generate)
    training_set = build_small(real_model, tmp_path, n_malicious=None, n_refusal=None, n_pseudo_malicious=None,
                               n_benign=40)
    index = evaluation_index(DATA_DIR)
    copies = [example.prompt for example in training_set.all_examples() if index.find_near_copy(example.prompt)]
    assert copies == []
    removed = training_set.stats["near_copies_removed"]
    assert removed["harmful_train"]["dropped"] > 0
    assert removed[PSEUDO_MALICIOUS]["dropped"] >= 10
    assert training_set.stats[PSEUDO_MALICIOUS]["written"] == len(load_written_pseudo_malicious())


@needs_data
def test_augmented_prefixes_come_from_malicious(real_model, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "generate", fake_generate)
    training_set = build_small(real_model, tmp_path)
    responses = {example.prompt: example.response for example in training_set[MALICIOUS]}
    for example in training_set[AUGMENTED]:
        assert responses[example.prompt].startswith(example.response_prefix)


@needs_data
@pytest.mark.real_model
def test_build_with_real_generation(real_model, tmp_path):
    training_set = build_small(real_model, tmp_path, n_malicious=3, n_benign=2, n_pseudo_malicious=4,
                               n_refusal=2, n_augmented=3, max_new_tokens=8, batch_size=4)
    counts = training_set.counts()
    assert counts[MALICIOUS] >= 1
    assert counts[AUGMENTED] == 3
    records = [json.loads(line) for line in next((tmp_path / "completions").glob("harmful_train-*")).open()]
    assert len(records) == 3
    assert all(0 < record["num_new_tokens"] <= 8 for record in records)


@needs_data
def test_whitespace_completions_not_kept(tiny_model, tmp_path):
    # The random tiny model generates line breaks only, which count as empty completions.
    with pytest.raises(MosrError, match="only 0 of 4 harmful_train completions"):
        build_small(tiny_model, tmp_path, n_malicious=4, max_new_tokens=4)
    stats_file = tmp_path / STATS_FILE
    assert not stats_file.exists()


@needs_data
def test_too_few_malicious_is_error(real_model, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "generate", fake_generate)
    with pytest.raises(MosrError, match="only 0 of 12 harmful_train completions"):
        build_small(real_model, tmp_path, harm_judge=FixedJudge(False))


@needs_data
def test_empty_set_is_error(real_model, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "generate", fake_generate)
    with pytest.raises(MosrError, match="empty"):
        build_small(real_model, tmp_path, n_malicious=0, n_benign=0, n_pseudo_malicious=0, n_refusal=0,
                    n_augmented=0)


@needs_data
def test_kind_with_nothing_kept_is_error(real_model, tmp_path, monkeypatch):
    def empty_generate(loaded, prompts, *, ids=None, **settings):
        return [{"id": sample_id, "prompt": prompt, "response": " ", "stop_reason": generation.END_OF_TURN,
                 "num_new_tokens": 1, "empty": True} for sample_id, prompt in zip(ids, prompts)]

    monkeypatch.setattr(generation, "generate", empty_generate)
    with pytest.raises(MosrError, match=r"no benign examples were kept .*empty_completions"):
        build_small(real_model, tmp_path, n_malicious=0, n_augmented=0)


@pytest.mark.parametrize("setting,value", [("n_benign", -1), ("n_refusal", 2.5), ("max_new_tokens", 0)])
def test_bad_setting_is_error(real_model, tmp_path, setting, value):
    with pytest.raises(MosrError, match=setting):
        build_small(real_model, tmp_path, **{setting: value})


def test_load_missing_training_set_is_error(tmp_path):
    with pytest.raises(MosrError, match="training set not found"):
        load_training_set(tmp_path)
    (tmp_path / TRAINING_SET_FILE).write_text('{"id": "x", "kind": "nonsense", "prompt": "p", "response": "r"}\n')
    with pytest.raises(MosrError, match="line 1"):
        load_training_set(tmp_path)

