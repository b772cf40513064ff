"""Circuit Breakers (Zou et al., 2024, "Improving Alignment and Robustness with Circuit Breakers").

Loss terms, at the loss layers over response tokens:
- `reroute` on malicious examples: `relu(cos(h_M, h_M0))`, coefficient `alpha * (1 - t / (2T))`;
- `retain` on benign and pseudo-malicious examples: `||h_M - h_M0||_2 / ||h_M0||_2` (the paper's
  absolute distance with `relative_retain=False`), coefficient `alpha * t / (2T)`;
- `retain_kl` (off by default): KL(p_M0 || p_M) on the same examples, coefficient
  `kl_weight * alpha * t / (2T)`.

t is the number of steps done and T the total number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from mosr.data.examples import BENIGN, MALICIOUS, PSEUDO_MALICIOUS
from mosr.defenses import losses
from mosr.defenses.base import Group, LossTerm, Method, Progress, circuit_breaker_schedule
from mosr.defenses.forward import PassOutputs, PassRequest
from mosr.errors import MosrError


@dataclass
class CircuitBreakersOptions:
    """Settings of the Circuit Breakers loss."""

    alpha: float = 10.0
    """Scale of the coefficient schedule (the paper's value for Llama-3-8B-Instruct)."""
    relative_retain: bool = True
    """Divide the retain distance by ||h_M0||; False gives the paper's absolute distance."""
    retain_kl: bool = False
    """Add KL(p_M0 || p_M) on the retain examples' response tokens."""
    kl_weight: float = 1.0
    """Factor of the KL term relative to the retain coefficient."""

    def __post_init__(self):
        if self.alpha <= 0:
            raise MosrError(f"alpha must be positive, got {self.alpha}")
        if self.kl_weight < 0:
            raise MosrError(f"kl_weight must be zero or positive, got {self.kl_weight}")


def retain_group(kinds: tuple[str, ...], kl: bool, *, logits: bool = False) -> Group:
    """Return the group whose representations (and, with `kl`, next-token distributions) are kept.

    `logits` requests the adapted model's logits without the frozen ones, for a cross-entropy term.
    """
    request = PassRequest(states=True, frozen_states=True, logits=kl or logits, frozen_logits=kl)
    return Group("retain", kinds, request)


def retain_terms(outputs: PassOutputs, coefficient: float, kl_coefficient: float | None,
                 *, relative: bool) -> list[LossTerm]:
    """Compute the `retain` term and, when `kl_coefficient` is given, the `retain_kl` term."""
    batch = outputs.batch
    retain = losses.retain_loss(outputs.states, outputs.frozen_states, batch.sample_index, batch.size,
                                relative=relative)
    terms = [LossTerm("retain", retain, coefficient)]
    if kl_coefficient is not None:
        kl = losses.kl_loss(outputs.logits, outputs.frozen_logits, batch.sample_index, batch.size)
        terms.append(LossTerm("retain_kl", kl, kl_coefficient))
    return terms


class CircuitBreakers(Method):
    """Reroute malicious representations, retain benign and pseudo-malicious ones."""

    name = "circuit-breakers"
    options_class = CircuitBreakersOptions

    def groups(self) -> list[Group]:
        return [
            Group("erase", (MALICIOUS,), PassRequest(states=True, frozen_states=True)),
            retain_group((BENIGN, PSEUDO_MALICIOUS), self.options.retain_kl),
        ]

    def loss_terms(self, group: str, outputs: PassOutputs, progress: Progress) -> list[LossTerm]:
        reroute_coefficient, retain_coefficient = circuit_breaker_schedule(self.options.alpha, progress)
        batch = outputs.batch
        if group == "erase":
            value = losses.reroute_loss(outputs.states, outputs.frozen_states, batch.sample_index, batch.size)
            return [LossTerm("reroute", value, reroute_coefficient)]
        kl_coefficient = self.options.kl_weight * retain_coefficient if self.options.retain_kl else None
        return retain_terms(outputs, retain_coefficient, kl_coefficient, relative=self.options.relative_retain)
