"""Overlap-Aware Loss Weighting: erase malicious samples less where they sit among pseudo-malicious ones.

The MOSR paper (Zhang et al., arXiv 2511.19009) describes the idea but not its formulas, so this
project defines them:

- r_i is the frozen model's hidden state of malicious prompt i and p_j that of pseudo-malicious
  prompt j, at one layer, pooled over the prompt. "last" pooling takes the state at the position
  that predicts the first response token, and "mean" the mean over the rendered prompt's tokens.
  With `center` (the default), the mean of all r_i and p_j is subtracted first. Then every vector
  is L2-normalised.
- The overlap s_i is the mean of the `top_k` largest cosine similarities between r_i and the p_j.
- The erasure weight is w_i = (1 - λ) + λ · N · softmax(-s / τ)_i over the N malicious samples.
  The weights average exactly 1, decrease as s_i grows, and are all 1 for λ = 0.

Centring is this project's addition. Residual-stream states share a large common component, so
raw cosines hardly vary. For SmolLM2-135M-Instruct at layer 15 with "last" pooling, 150 harmful
prompts (refusal_direction harmful_train) against 50 OKTest held-out prompts give raw overlaps of
0.91 to 0.98, and centred overlaps of -0.32 to 0.41. The default τ = 0.1 suits centred overlaps
(on that data: weights 0.50 to 3.3, 90th percentile 1.8, for λ = 0.5).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mosr.data.examples import TrainingExample
from mosr.errors import MosrError

logger = logging.getLogger(__name__)

OVERLAP_WEIGHTS_FILE = "overlap_weights.jsonl"


@dataclass
class OverlapSettings:
    """Settings of the overlap-aware weights."""

    strength: float = 0.5
    """λ in [0, 1]: 0 gives every malicious sample weight 1, 1 gives the full softmax weights."""
    temperature: float = 0.1
    """τ > 0, in units of cosine similarity: smaller values spread the weights further apart."""
    top_k: int = 5
    """Number of nearest pseudo-malicious prompts averaged into a malicious prompt's overlap."""
    layer: int | None = None
    """Hidden-state index (1 = output of the first decoder block); None means the middle layer."""
    pooling: Literal["last", "mean"] = "last"
    """Pooling of a prompt's token states into one vector: "last" or "mean"."""
    center: bool = True
    """Subtract the mean of all malicious and pseudo-malicious representations before normalising."""

    def __post_init__(self):
        if not 0.0 <= self.strength <= 1.0:
            raise MosrError(f"overlap strength must be between 0 and 1, got {self.strength}")
        if not self.temperature > 0.0:
            raise MosrError(f"overlap temperature must be positive, got {self.temperature}")
        if self.top_k < 1:
            raise MosrError(f"overlap top-k must be at least 1, got {self.top_k}")
        if self.pooling not in ("last", "mean"):
            raise MosrError(f"overlap pooling must be 'last' or 'mean', got {self.pooling!r}")

    def resolve_layer(self, num_layers: int) -> int:
        """Return the hidden-state index to use, checked against a model with `num_layers` blocks."""
        layer = num_layers // 2 if self.layer is None else self.layer
        if not 1 <= layer <= num_layers:
            raise MosrError(f"overlap layer {layer} is out of range: this model has layers 1 to {num_layers}")
        return layer


@dataclass(frozen=True)
class OverlapRecord:
    """The overlap and erasure weight of one malicious training example."""

    id: str
    prompt: str
    overlap: float
    weight: float


def _normalize_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def overlap_scores(malicious: np.ndarray, pseudo_malicious: np.ndarray, top_k: int) -> np.ndarray:
    """Compute s_i: the mean of the `top_k` largest cosine similarities of each malicious row to the pseudo-malicious rows.

    Rows are normalised here, so raw hidden states can be passed. With fewer than `top_k`
    pseudo-malicious rows, all of them are averaged.
    """
    if malicious.ndim != 2 or pseudo_malicious.ndim != 2 or malicious.shape[1] != pseudo_malicious.shape[1]:
        raise ValueError(
            f"expected two [rows, hidden] matrices of the same width, got {malicious.shape} and {pseudo_malicious.shape}"
        )
    if len(pseudo_malicious) == 0:
        raise MosrError("overlap weighting needs pseudo-malicious examples, and the training set has none")
    similarity = _normalize_rows(malicious) @ _normalize_rows(pseudo_malicious).T
    k = min(top_k, similarity.shape[1])
    # The k largest per row, in no particular order, which is all a mean needs.
    nearest = np.partition(similarity, similarity.shape[1] - k, axis=1)[:, -k:]
    return nearest.mean(axis=1)


def overlap_weights(scores: np.ndarray, strength: float, temperature: float) -> np.ndarray:
    """Compute w = (1 - λ) + λ · N · softmax(-s / τ); the weights average 1."""
    scores = np.asarray(scores, dtype=np.float64)
    logits = -scores / temperature
    logits -= logits.max()
    softmax = np.exp(logits) / np.exp(logits).sum()
    return (1.0 - strength) + strength * len(scores) * softmax


def compute_overlap_weights(
    loaded,
    malicious: list[TrainingExample],
    pseudo_malicious: list[TrainingExample],
    settings: OverlapSettings,
    *,
    system_prompt: str | None = None,
    batch_size: int = 16,
) -> list[OverlapRecord]:
    """Compute the erasure weight of each malicious example from the frozen model's prompt representations.

    `loaded` must hold the model without trained adapters, because the weights describe the model
    before training.
    """
    from mosr.representations import extract_hidden_states

    if not malicious:
        raise MosrError("overlap weighting needs malicious examples, and the training set has none")
    if not pseudo_malicious:
        raise MosrError(
            "overlap weighting needs pseudo-malicious examples, and the training set has none: "
            "add some or turn overlap weighting off"
        )
    if len(pseudo_malicious) < settings.top_k:
        logger.warning(
            "only %d pseudo-malicious examples for overlap top-k %d: each overlap averages all of them",
            len(pseudo_malicious), settings.top_k,
        )
    layer = settings.resolve_layer(loaded.num_layers)
    prompts = [example.prompt for example in malicious] + [example.prompt for example in pseudo_malicious]
    states = extract_hidden_states(
        loaded,
        prompts,
        pooling=(settings.pooling,),
        layers=[layer],
        batch_size=batch_size,
        system_prompt=system_prompt,
        final_norm=False,
        progress=False,
    )[settings.pooling][:, 0, :]
    states = states.astype(np.float64)
    if settings.center:
        states = states - states.mean(axis=0, keepdims=True)
    scores = overlap_scores(states[: len(malicious)], states[len(malicious) :], settings.top_k)
    weights = overlap_weights(scores, settings.strength, settings.temperature)
    logger.info(
        "overlap weights at layer %d (%s pooling): overlap %.3f..%.3f, weight %.3f..%.3f",
        layer, settings.pooling, scores.min(), scores.max(), weights.min(), weights.max(),
    )
    return [
        OverlapRecord(id=example.id, prompt=example.prompt, overlap=float(score), weight=float(weight))
        for example, score, weight in zip(malicious, scores, weights)
    ]


def write_overlap_weights(path: str | Path, records: list[OverlapRecord]) -> None:
    """Write one JSON line per malicious example (id, prompt, overlap, weight), lowest weight first."""
    path = Path(path)
    ordered = sorted(records, key=lambda record: record.weight)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as file:
        for record in ordered:
            file.write(json.dumps({"id": record.id, "prompt": record.prompt, "overlap": record.overlap,
                                   "weight": record.weight}, ensure_ascii=False) + "\n")
    partial.replace(path)


def read_overlap_weights(path: str | Path) -> list[OverlapRecord]:
    """Read the records written by `write_overlap_weights`."""
    records = []
    with Path(path).open(encoding="utf-8") as file:
        for line in file:
            if line.strip():
                row = json.loads(line)
                records.append(OverlapRecord(id=row["id"], prompt=row["prompt"], overlap=float(row["overlap"]),
                                             weight=float(row["weight"])))
    return records
