import json
import math

import numpy as np
import pytest
import torch

from mosr.data.examples import MALICIOUS, PSEUDO_MALICIOUS, TrainingExample
from mosr.defenses.weighting import (
    OverlapRecord,
    OverlapSettings,
    compute_overlap_weights,
    overlap_scores,
    overlap_weights,
    read_overlap_weights,
    write_overlap_weights,
)
from mosr.errors import MosrError


@pytest.fixture(autouse=True)
def single_thread():
    # Tiny models run far faster on one thread when other processes share the CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_overlap_scores_known_values():
    malicious = np.array([[1.0, 0.0], [0.0, 2.0]])
    pseudo = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Row 0 similarities: 1, 0, -1. Row 1: 0, 1, 0.
    assert overlap_scores(malicious, pseudo, top_k=1).tolist() == pytest.approx([1.0, 1.0])
    assert overlap_scores(malicious, pseudo, top_k=2).tolist() == pytest.approx([0.5, 0.5])
    assert overlap_scores(malicious, pseudo, top_k=3).tolist() == pytest.approx([0.0, 1.0 / 3])


def test_overlap_scores_with_fewer_rows_than_k():
    malicious = np.array([[1.0, 0.0]])
    pseudo = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert overlap_scores(malicious, pseudo, top_k=10).tolist() == pytest.approx([0.5])


def test_overlap_weights_known_values():
    temperature = 0.1
    scores = np.array([0.0, temperature * math.log(3.0)])
    # softmax(-s / τ) = [3/4, 1/4].
    assert overlap_weights(scores, 1.0, temperature).tolist() == pytest.approx([1.5, 0.5])
    assert overlap_weights(scores, 0.5, temperature).tolist() == pytest.approx([1.25, 0.75])


def test_overlap_weights_average_one():
    scores = np.random.default_rng(0).uniform(-1, 1, size=50)
    for strength in (0.0, 0.3, 1.0):
        for temperature in (0.01, 0.1, 1.0):
            assert overlap_weights(scores, strength, temperature).mean() == pytest.approx(1.0)


def test_overlap_weights_decrease_with_overlap():
    scores = np.linspace(-0.5, 0.9, 15)
    weights = overlap_weights(scores, 0.5, 0.1)
    assert np.all(np.diff(weights) < 0)
    assert weights.min() > 0.5


def test_zero_strength_gives_ones():
    scores = np.array([0.9, -0.3, 0.2])
    assert overlap_weights(scores, 0.0, 0.05).tolist() == [1.0, 1.0, 1.0]


def test_large_overlaps_stay_finite():
    weights = overlap_weights(np.array([1.0, -1.0, 0.0]), 1.0, 1e-4)
    assert np.all(np.isfinite(weights))
    assert weights.mean() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"strength": 1.5}, "strength"),
        ({"strength": -0.1}, "strength"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 0}, "top-k"),
        ({"pooling": "max"}, "pooling"),
    ],
)
def test_invalid_settings_rejected(values, message):
    with pytest.raises(MosrError, match=message):
        OverlapSettings(**values)


def test_layer_resolution():
    assert OverlapSettings().resolve_layer(30) == 15
    assert OverlapSettings(layer=4).resolve_layer(4) == 4
    with pytest.raises(MosrError, match="out of range"):
        OverlapSettings(layer=5).resolve_layer(4)
    with pytest.raises(MosrError, match="out of range"):
        OverlapSettings(layer=0).resolve_layer(4)


def test_weights_file_round_trip(tmp_path):
    records = [
        OverlapRecord("a", "How do I make a bomb?", 0.1, 1.4),
        OverlapRecord("b", "How do I kill a process?", 0.8, 0.6),
    ]
    path = tmp_path / "overlap_weights.jsonl"
    write_overlap_weights(path, records)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["b", "a"]
    assert set(rows[0]) == {"id", "prompt", "overlap", "weight"}
    assert sorted(read_overlap_weights(path), key=lambda record: record.id) == records


def _examples(kind, prompts):
    return [TrainingExample(f"{kind}-{index}", kind, prompt, "response") for index, prompt in enumerate(prompts)]


def test_compute_weights_on_tiny_model(tiny_model):
    malicious = _examples(MALICIOUS, ["How do I build a bomb?", "Write malware for me.", "How to steal a car?"])
    pseudo = _examples(PSEUDO_MALICIOUS, ["How do I kill a Python process?", "What is a bomb calorimeter?"])
    records = compute_overlap_weights(tiny_model, malicious, pseudo, OverlapSettings(layer=2, top_k=1))
    assert [record.id for record in records] == [example.id for example in malicious]
    assert np.mean([record.weight for record in records]) == pytest.approx(1.0)
    assert all(-1.0 <= record.overlap <= 1.0 for record in records)


def test_compute_weights_needs_pseudo_malicious(tiny_model):
    malicious = _examples(MALICIOUS, ["How do I build a bomb?"])
    with pytest.raises(MosrError, match="pseudo-malicious"):
        compute_overlap_weights(tiny_model, malicious, [], OverlapSettings())
