"""RepBend (Yousefpour et al., 2025, "Representation Bending for Large Language Model Safety").

The published method pushes the adapted model's states of unsafe inputs away from the frozen
model's, pulls unsafe states together by cosine similarity, keeps safe states close in L2 and
keeps the next-token distribution on safe inputs by KL. The exact terms here are this project's:

- `push` on malicious examples: `-min(||h_M - h_M0||_2 / ||h_M0||_2, max_distance)` per token and
  loss layer (a capped relative distance; see `losses.bend_push_loss`), coefficient `push_weight`;
- `pull` on malicious examples: one minus the mean cosine similarity between the token-averaged
  states of different samples in the batch, coefficient `pull_weight`;
- `retain` on benign and pseudo-malicious examples: `||h_M - h_M0||_2 / ||h_M0||_2` (absolute with
  `relative_retain=False`), coefficient `retain_weight`;
- `retain_kl` on the same examples: KL(p_M0 || p_M), coefficient `kl_weight` (0 turns it off).

The coefficients are constant over training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mosr.data.examples import BENIGN, MALICIOUS, PSEUDO_MALICIOUS
from mosr.defenses import losses
from mosr.defenses.base import Group, LossTerm, Method, Progress
from mosr.defenses.circuit_breakers import retain_group, retain_terms
from mosr.defenses.forward import PassOutputs, PassRequest
from mosr.errors import MosrError


@dataclass
class RepBendOptions:
    """Settings of the RepBend loss."""

    push_weight: float = 1.0
    pull_weight: float = 0.5
    retain_weight: float = 1.0
    kl_weight: float = 1.0
    max_distance: float = 1.5
    """Cap of the push term's relative distance ||h_M - h_M0|| / ||h_M0||."""
    relative_retain: bool = True
    """Divide the retain distance by ||h_M0||, as the push term does; False gives the absolute distance."""

    def __post_init__(self):
        for name in ("push_weight", "pull_weight", "retain_weight", "kl_weight"):
            if getattr(self, name) < 0:
                raise MosrError(f"{name} must be zero or positive, got {getattr(self, name)}")
        if self.max_distance <= 0:
            raise MosrError(f"max_distance must be positive, got {self.max_distance}")


def bend_terms(outputs: PassOutputs, options: RepBendOptions, weights: torch.Tensor | None = None) -> list[LossTerm]:
    """Compute the `push` and `pull` terms of one batch of malicious examples, with optional per-sample weights."""
    batch = outputs.batch
    push = losses.bend_push_loss(outputs.states, outputs.frozen_states, batch.sample_index, batch.size, weights,
                                 max_distance=options.max_distance)
    pull = losses.bend_pull_loss(outputs.states, batch.sample_index, batch.size, weights)
    return [LossTerm("push", push, options.push_weight), LossTerm("pull", pull, options.pull_weight)]


def bend_retain_terms(outputs: PassOutputs, options: RepBendOptions) -> list[LossTerm]:
    """Compute the `retain` term and, unless `kl_weight` is 0, the `retain_kl` term."""
    return retain_terms(outputs, options.retain_weight, options.kl_weight if options.kl_weight > 0 else None,
                        relative=options.relative_retain)


class RepBend(Method):
    """Bend malicious representations away from the frozen model's, retain benign and pseudo-malicious ones."""

    name = "repbend"
    options_class = RepBendOptions

    def groups(self) -> list[Group]:
        return [
            Group("erase", (MALICIOUS,), PassRequest(states=True, frozen_states=True)),
            retain_group((BENIGN, PSEUDO_MALICIOUS), self.options.kl_weight > 0),
        ]

    def loss_terms(self, group: str, outputs: PassOutputs, progress: Progress) -> list[LossTerm]:
        if group == "erase":
            return bend_terms(outputs, self.options)
        return bend_retain_terms(outputs, self.options)
