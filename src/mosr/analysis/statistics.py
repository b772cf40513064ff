"""Per-layer statistics of benign, pseudo-malicious and malicious hidden states, as pure numpy functions.

Definitions used throughout mosr (they are choices of this project, exposed here so that every
number in an analysis can be recomputed):

- Harmfulness direction at a layer: v = mean(malicious) - mean(benign).
- Position of a state x along it: (x - mean(benign)) . v / (v . v). The benign mean maps to 0 and
  the malicious mean to 1. Benign and malicious prompts get leave-one-out positions, computed
  with the means of their own group without them, because a prompt that helped estimate a mean
  sits closer to it than an unseen prompt would, and pseudo-malicious prompts are unseen.
- Boundary score: max(0, 1 - |2 * position - 1|). It is 1 at the midpoint between the two means,
  falls linearly to 0 at either mean, and stays 0 beyond them. It is defined on the same axis as
  the claim it tests. A probe's probability would saturate near 0 or 1 on separable classes.
- Probe: standardised features and an L2 logistic regression, benign (0) against malicious (1),
  trained on a stratified split by prompt text and scored on the held-out prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mosr.errors import MosrError

logger = logging.getLogger(__name__)

GROUPS = ("benign", "pseudo_malicious", "malicious")

# A direction shorter than this share of the mean state norm is treated as zero: the groups do not differ there.
_ZERO_DIRECTION_RATIO = 1e-6


def harmfulness_direction(benign: np.ndarray, malicious: np.ndarray) -> np.ndarray:
    """Return mean(malicious) - mean(benign) for [n, hidden] states of one layer."""
    return malicious.mean(axis=0) - benign.mean(axis=0)


def _is_zero_direction(direction: np.ndarray, reference: np.ndarray) -> bool:
    scale = float(np.linalg.norm(reference, axis=-1).mean()) if reference.size else 0.0
    return float(np.linalg.norm(direction)) <= _ZERO_DIRECTION_RATIO * max(scale, 1e-12)


def project_positions(states: np.ndarray, benign_mean: np.ndarray, malicious_mean: np.ndarray) -> np.ndarray:
    """Return each state's position on the benign-to-malicious axis (benign mean 0, malicious mean 1).

    Returns NaN for every state when the two means coincide, since the axis is then undefined.
    """
    direction = malicious_mean - benign_mean
    if _is_zero_direction(direction, np.stack([benign_mean, malicious_mean])):
        return np.full(len(states), np.nan)
    return (states - benign_mean) @ direction / float(direction @ direction)


def leave_one_out_positions(group: np.ndarray, other_mean: np.ndarray, *, group_is_benign: bool) -> np.ndarray:
    """Return positions of a reference group's own prompts, each with its group mean computed without it.

    `group` is the benign or malicious states [n, hidden] with n >= 2, `other_mean` the mean of
    the other reference group. Position 0 is still benign and 1 malicious.
    """
    count = len(group)
    if count < 2:
        raise MosrError(f"leave-one-out positions need at least 2 prompts in a group, got {count}")
    total = group.sum(axis=0)
    means_without = (total[None, :] - group) / (count - 1)
    if group_is_benign:
        benign_means, malicious_means = means_without, np.broadcast_to(other_mean, group.shape)
    else:
        benign_means, malicious_means = np.broadcast_to(other_mean, group.shape), means_without
    directions = malicious_means - benign_means
    squared_norms = np.einsum("ij,ij->i", directions, directions)
    positions = np.einsum("ij,ij->i", group - benign_means, directions) / np.where(squared_norms > 0, squared_norms, 1.0)
    reference_scale = float(np.linalg.norm(group, axis=-1).mean())
    degenerate = np.sqrt(squared_norms) <= _ZERO_DIRECTION_RATIO * max(reference_scale, 1e-12)
    positions[degenerate] = np.nan
    return positions


def boundary_scores(positions: np.ndarray) -> np.ndarray:
    """Return max(0, 1 - |2 * position - 1|): 1 at the midpoint of the two means, 0 at or beyond either."""
    positions = np.asarray(positions, dtype=float)
    return np.clip(1.0 - np.abs(2.0 * positions - 1.0), 0.0, 1.0)


def centroid_distances(states: np.ndarray, benign_mean: np.ndarray, malicious_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the Euclidean distances of each state to the benign and to the malicious mean."""
    return np.linalg.norm(states - benign_mean, axis=1), np.linalg.norm(states - malicious_mean, axis=1)


def split_by_prompt(
    prompts: Sequence[str],
    labels: Sequence[int],
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into train and test indices, stratified by label, with identical prompt texts kept together.

    Each label keeps at least one distinct prompt on each side, so every label needs at least two
    distinct prompts. A prompt text with two different labels is an error.
    """
    if not 0.0 < test_fraction < 1.0:
        raise MosrError(f"test fraction must be between 0 and 1, got {test_fraction}")
    if len(prompts) != len(labels):
        raise MosrError(f"got {len(prompts)} prompts but {len(labels)} labels")
    label_of_prompt: dict[str, int] = {}
    for prompt, label in zip(prompts, labels):
        if label_of_prompt.setdefault(prompt, label) != label:
            raise MosrError(f"the prompt {prompt[:60]!r} appears with two different labels")

    rng = np.random.default_rng(seed)
    test_prompts: set[str] = set()
    for label in sorted(set(label_of_prompt.values())):
        distinct = sorted(prompt for prompt, value in label_of_prompt.items() if value == label)
        if len(distinct) < 2:
            raise MosrError(f"label {label} has {len(distinct)} distinct prompt(s); a held-out split needs at least 2")
        test_count = min(max(1, int(round(test_fraction * len(distinct)))), len(distinct) - 1)
        chosen = rng.permutation(len(distinct))[:test_count]
        test_prompts.update(distinct[index] for index in chosen)

    is_test = np.array([prompt in test_prompts for prompt in prompts])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def fit_probe(features: np.ndarray, labels: np.ndarray, *, seed: int = 0, regularization: float = 1.0):
    """Fit a standardised L2 logistic regression with balanced class weights and return the pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=regularization, class_weight="balanced", max_iter=5000, random_state=seed),
    )
    probe.fit(features, labels)
    return probe


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Return the area under the ROC curve of scores for boolean labels, or None if it is undefined.

    It is undefined when a class is missing or when any score is NaN.
    """
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    if len(scores) == 0 or labels.all() or not labels.any() or np.isnan(scores).any():
        return None
    return float(roc_auc_score(labels, scores))


def auroc_interval(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Return a percentile bootstrap interval of the AUROC, or None where the AUROC is undefined.

    Positives and negatives are resampled separately, so each resample keeps both classes.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    if auroc(scores, labels) is None:
        return None
    positives, negatives = scores[labels], scores[~labels]
    rng = np.random.default_rng(seed)
    sampled = np.concatenate([
        rng.choice(positives, size=(resamples, len(positives))),
        rng.choice(negatives, size=(resamples, len(negatives))),
    ], axis=1)
    # Mann-Whitney form of the AUROC: rank sum of the positives, ties ranked by their average.
    ranks = rankdata(sampled, axis=1)[:, : len(positives)]
    values = (ranks.sum(axis=1) - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def greater_auroc(first: np.ndarray, second: np.ndarray) -> float | None:
    """Return P(a value of `first` > a value of `second`), ties counting one half (the AUROC of first against second)."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    return auroc(np.concatenate([first, second]), np.concatenate([np.ones(len(first)), np.zeros(len(second))]))


def one_sided_greater_p_value(first: np.ndarray, second: np.ndarray) -> float | None:
    """Return the Mann-Whitney U p-value for `first` tending to exceed `second`, or None if undefined."""
    from scipy.stats import mannwhitneyu

    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if len(first) == 0 or len(second) == 0 or np.isnan(first).any() or np.isnan(second).any():
        return None
    if np.ptp(np.concatenate([first, second])) == 0:
        return 1.0
    return float(mannwhitneyu(first, second, alternative="greater").pvalue)


@dataclass
class LayerStatistics:
    """Statistics of one layer. Per-prompt arrays follow the order of the prompts in each group."""

    layer: int
    direction_norm: float
    probe_accuracy: float
    probe_balanced_accuracy: float
    probe_test_size: int
    pseudo_called_malicious: float
    positions: dict[str, np.ndarray]
    boundary: dict[str, np.ndarray]
    pseudo_probe_probability: np.ndarray
    pseudo_distance_to_benign: np.ndarray
    pseudo_distance_to_malicious: np.ndarray
    boundary_auroc_vs_benign: float | None
    boundary_auroc_vs_malicious: float | None
    boundary_p_value_vs_benign: float | None
    boundary_p_value_vs_malicious: float | None
    extra: dict = field(default_factory=dict)

    @property
    def median_positions(self) -> dict[str, float | None]:
        return {group: _nan_to_none(np.nanmedian(values)) if np.isfinite(values).any() else None
                for group, values in self.positions.items()}

    @property
    def mean_boundary(self) -> dict[str, float | None]:
        return {group: _nan_to_none(np.nanmean(values)) if np.isfinite(values).any() else None
                for group, values in self.boundary.items()}

    @property
    def pseudo_closer_to_malicious(self) -> float:
        return float(np.mean(self.pseudo_distance_to_malicious < self.pseudo_distance_to_benign))

    @property
    def pseudo_distance_ratio(self) -> float:
        """Mean of d_benign / (d_benign + d_malicious) over pseudo-malicious prompts: 0.5 is equidistant."""
        total = self.pseudo_distance_to_benign + self.pseudo_distance_to_malicious
        return float(np.mean(np.divide(self.pseudo_distance_to_benign, total, out=np.full_like(total, 0.5), where=total > 0)))

    @property
    def boundary_claim_holds(self) -> bool:
        """Whether pseudo-malicious prompts sit between the groups and nearer the boundary than both.

        True when the median pseudo-malicious position lies strictly between the benign and malicious
        medians and the pseudo-malicious boundary scores exceed those of both other groups under a
        one-sided Mann-Whitney U test at p < 0.05. The test is per layer and not corrected for
        testing many layers.
        """
        medians = self.median_positions
        if any(value is None for value in medians.values()):
            return False
        between = medians["benign"] < medians["pseudo_malicious"] < medians["malicious"]
        p_values = (self.boundary_p_value_vs_benign, self.boundary_p_value_vs_malicious)
        return bool(between and all(p is not None and p < 0.05 for p in p_values))

    def summary(self) -> dict:
        """Return the scalar statistics of this layer as plain JSON values."""
        return {
            "layer": self.layer,
            "direction_norm": self.direction_norm,
            "probe_accuracy": self.probe_accuracy,
            "probe_balanced_accuracy": self.probe_balanced_accuracy,
            "probe_test_size": self.probe_test_size,
            "pseudo_called_malicious": self.pseudo_called_malicious,
            "pseudo_mean_probe_probability": float(np.mean(self.pseudo_probe_probability)),
            "median_position": self.median_positions,
            "mean_position": {group: _nan_to_none(np.nanmean(values)) if np.isfinite(values).any() else None
                              for group, values in self.positions.items()},
            "mean_boundary": self.mean_boundary,
            "pseudo_between_share": _between_share(self.positions["pseudo_malicious"]),
            "pseudo_closer_to_malicious": self.pseudo_closer_to_malicious,
            "pseudo_distance_ratio": self.pseudo_distance_ratio,
            "boundary_auroc_vs_benign": self.boundary_auroc_vs_benign,
            "boundary_auroc_vs_malicious": self.boundary_auroc_vs_malicious,
            "boundary_p_value_vs_benign": self.boundary_p_value_vs_benign,
            "boundary_p_value_vs_malicious": self.boundary_p_value_vs_malicious,
            "boundary_claim_holds": self.boundary_claim_holds,
            **self.extra,
        }


def _nan_to_none(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def _between_share(positions: np.ndarray) -> float | None:
    """Share of positions strictly between the benign (0) and malicious (1) means."""
    if not np.isfinite(positions).any():
        return None
    return float(np.mean((positions > 0) & (positions < 1)))


def analyze_layer(
    layer: int,
    states: dict[str, np.ndarray],
    prompts: dict[str, Sequence[str]],
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> LayerStatistics:
    """Compute every statistic of one layer from [n, hidden] states of the three groups.

    `states` and `prompts` map each name in GROUPS to that group's states and prompt texts.
    """
    for group in GROUPS:
        if group not in states:
            raise MosrError(f"missing the {group} group")
        if len(states[group]) < 2:
            raise MosrError(f"the {group} group has {len(states[group])} prompt(s); at least 2 are needed")
        if len(states[group]) != len(prompts[group]):
            raise MosrError(f"the {group} group has {len(states[group])} states but {len(prompts[group])} prompts")
    benign = np.asarray(states["benign"], dtype=np.float64)
    pseudo = np.asarray(states["pseudo_malicious"], dtype=np.float64)
    malicious = np.asarray(states["malicious"], dtype=np.float64)
    benign_mean, malicious_mean = benign.mean(axis=0), malicious.mean(axis=0)
    direction = malicious_mean - benign_mean

    positions = {
        "benign": leave_one_out_positions(benign, malicious_mean, group_is_benign=True),
        "pseudo_malicious": project_positions(pseudo, benign_mean, malicious_mean),
        "malicious": leave_one_out_positions(malicious, benign_mean, group_is_benign=False),
    }
    if np.isnan(positions["pseudo_malicious"]).all():
        logger.info("layer %d: benign and malicious means coincide, so positions are undefined", layer)
    boundary = {group: boundary_scores(values) for group, values in positions.items()}

    features = np.concatenate([benign, malicious])
    labels = np.concatenate([np.zeros(len(benign), dtype=int), np.ones(len(malicious), dtype=int)])
    train, test = split_by_prompt(
        list(prompts["benign"]) + list(prompts["malicious"]), labels, test_fraction=test_fraction, seed=seed
    )
    probe_result = _probe_statistics(features, labels, train, test, pseudo, seed)

    distance_to_benign, distance_to_malicious = centroid_distances(pseudo, benign_mean, malicious_mean)
    return LayerStatistics(
        layer=layer,
        direction_norm=float(np.linalg.norm(direction)),
        positions=positions,
        boundary=boundary,
        pseudo_distance_to_benign=distance_to_benign,
        pseudo_distance_to_malicious=distance_to_malicious,
        boundary_auroc_vs_benign=greater_auroc(boundary["pseudo_malicious"], boundary["benign"]),
        boundary_auroc_vs_malicious=greater_auroc(boundary["pseudo_malicious"], boundary["malicious"]),
        boundary_p_value_vs_benign=one_sided_greater_p_value(boundary["pseudo_malicious"], boundary["benign"]),
        boundary_p_value_vs_malicious=one_sided_greater_p_value(boundary["pseudo_malicious"], boundary["malicious"]),
        **probe_result,
    )


def _probe_statistics(features, labels, train, test, pseudo, seed) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    probe = fit_probe(features[train], labels[train], seed=seed)
    predicted = probe.predict(features[test])
    pseudo_probability = probe.predict_proba(pseudo)[:, 1]
    return {
        "probe_accuracy": float(np.mean(predicted == labels[test])),
        "probe_balanced_accuracy": float(balanced_accuracy_score(labels[test], predicted)),
        "probe_test_size": int(len(test)),
        "pseudo_called_malicious": float(np.mean(pseudo_probability > 0.5)),
        "pseudo_probe_probability": pseudo_probability,
    }


def analyze_layers(
    states: dict[str, np.ndarray],
    prompts: dict[str, Sequence[str]],
    layers: Sequence[int],
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> list[LayerStatistics]:
    """Run `analyze_layer` on each layer of [n, len(layers), hidden] states; `layers` names the second axis."""
    results = []
    for position, layer in enumerate(layers):
        layer_states = {group: np.asarray(values)[:, position, :] for group, values in states.items()}
        results.append(analyze_layer(layer, layer_states, prompts, seed=seed, test_fraction=test_fraction))
    return results
