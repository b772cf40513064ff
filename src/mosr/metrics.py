"""Rates with their counts and percentile-bootstrap 95% intervals."""

from __future__ import annotations

import numpy as np


def rate_with_interval(
    labels: list[bool | None],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Share of True among valid labels, with a percentile bootstrap interval.

    `None` labels (a judge that could not decide) are left out of the rate and reported as `invalid`.
    """
    valid = np.array([bool(label) for label in labels if label is not None], dtype=float)
    invalid = sum(label is None for label in labels)
    result = {"rate": None, "count": int(valid.sum()), "total": int(valid.size), "invalid": int(invalid),
              "ci_low": None, "ci_high": None}
    if valid.size == 0:
        return result
    rng = np.random.default_rng(seed)
    means = rng.choice(valid, size=(resamples, valid.size), replace=True).mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    result.update(
        rate=float(valid.mean()),
        ci_low=float(np.quantile(means, alpha)),
        ci_high=float(np.quantile(means, 1.0 - alpha)),
    )
    return result


def format_rate(metric: dict) -> str:
    """Format a rate as '12.3% (37/300) [8.9, 16.0]', the way report tables show it."""
    if metric.get("rate") is None:
        return "n/a"
    text = (f"{100 * metric['rate']:.1f}% ({metric['count']}/{metric['total']}) "
            f"[{100 * metric['ci_low']:.1f}, {100 * metric['ci_high']:.1f}]")
    if metric.get("invalid"):
        text += f", {metric['invalid']} invalid"
    return text
