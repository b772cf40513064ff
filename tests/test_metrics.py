import pytest

from mosr.metrics import format_rate, rate_with_interval


def test_rate_counts_and_interval():
    metric = rate_with_interval([True] * 30 + [False] * 70)
    assert metric["rate"] == pytest.approx(0.3)
    assert (metric["count"], metric["total"], metric["invalid"]) == (30, 100, 0)
    assert 0.2 < metric["ci_low"] < 0.3 < metric["ci_high"] < 0.4


def test_invalid_labels_excluded():
    metric = rate_with_interval([True, None, False, None])
    assert metric["rate"] == pytest.approx(0.5)
    assert metric["invalid"] == 2
    assert "2 invalid" in format_rate(metric)


def test_all_same_label_has_degenerate_interval():
    metric = rate_with_interval([False] * 10)
    assert metric["ci_low"] == metric["ci_high"] == 0.0


def test_empty_rate_is_none():
    metric = rate_with_interval([])
    assert metric["rate"] is None
    assert format_rate(metric) == "n/a"


def test_bootstrap_is_seeded():
    labels = [True, False, False, True, True]
    assert rate_with_interval(labels, seed=3) == rate_with_interval(labels, seed=3)
