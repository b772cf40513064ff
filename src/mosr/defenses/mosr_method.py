"""MOSR (Zhang et al., arXiv 2511.19009): a representation defense that spares over-refused prompts.

Loss terms:
- erasure on malicious examples, in one of two variants (`erasure`): Circuit Breakers rerouting
  with its coefficient schedule, or RepBend's push and pull terms. Each sample's term is
  multiplied by its overlap-aware weight (see `mosr.defenses.weighting`), unless
  `overlap_weighting` is off;
- retain on benign and pseudo-malicious examples, as in the chosen variant;
- `augmentation_ce` on augmented examples (harmful prompt, the first k tokens of a harmful
  response as context, then a refusal): cross-entropy on the refusal tokens and the end-of-turn
  token, coefficient `augmentation_weight`, unless `context_augmentation` is off;
- `retain_ce` with the augmentation: cross-entropy on the retain examples' responses (benign and
  pseudo-malicious), coefficient `retain_ce_weight`. Refusal cross-entropy alone taught
  SmolLM2-135M-Instruct to refuse 19 of 24 XSTest safe prompts within 16 steps. This term is its
  counterweight, as `retain_ce` is in refusal SFT.

The paper gives no formulas; these are this project's definitions, and each part is a setting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch

from mosr.data.examples import AUGMENTED, BENIGN, MALICIOUS, PSEUDO_MALICIOUS
from mosr.defenses import losses
from mosr.defenses.base import Group, LossTerm, Method, PreparationContext, Progress, circuit_breaker_schedule
from mosr.defenses.circuit_breakers import CircuitBreakersOptions, retain_group, retain_terms
from mosr.defenses.forward import PassOutputs, PassRequest
from mosr.defenses.repbend import RepBendOptions, bend_retain_terms, bend_terms
from mosr.defenses.weighting import (
    OVERLAP_WEIGHTS_FILE,
    OverlapSettings,
    compute_overlap_weights,
    read_overlap_weights,
    write_overlap_weights,
)
from mosr.errors import MosrError

logger = logging.getLogger(__name__)

ERASURES = ("circuit-breakers", "repbend")


@dataclass
class MosrOptions:
    """Settings of MOSR."""

    erasure: Literal["circuit-breakers", "repbend"] = "circuit-breakers"
    """Erasure and retain losses: those of Circuit Breakers or of RepBend."""
    circuit_breakers: CircuitBreakersOptions = field(default_factory=CircuitBreakersOptions)
    """Used when `erasure` is "circuit-breakers"."""
    repbend: RepBendOptions = field(default_factory=RepBendOptions)
    """Used when `erasure` is "repbend"."""
    overlap_weighting: bool = True
    overlap: OverlapSettings = field(default_factory=OverlapSettings)
    context_augmentation: bool = True
    augmentation_weight: float = 0.3
    """Coefficient of `augmentation_ce`. With 1.0 the cross-entropy steered every step on SmolLM2 and
    `reroute` did not fall in 30 steps; with 0.3 both fell (see docs/training.md)."""

    retain_ce_weight: float = 0.3
    """Coefficient of `retain_ce`, used with the augmentation (see docs/training.md)."""

    def __post_init__(self):
        if self.erasure not in ERASURES:
            raise MosrError(f"unknown erasure {self.erasure!r}: choose {' or '.join(ERASURES)}")
        for name in ("augmentation_weight", "retain_ce_weight"):
            if getattr(self, name) < 0:
                raise MosrError(f"{name} must be zero or positive, got {getattr(self, name)}")


class Mosr(Method):
    """Overlap-weighted erasure, retain, and refusal training on context-augmented examples."""

    name = "mosr"
    options_class = MosrOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.weights: dict[str, float] = {}

    def groups(self) -> list[Group]:
        options = self.options
        kl = options.circuit_breakers.retain_kl if options.erasure == "circuit-breakers" else options.repbend.kl_weight > 0
        groups = [
            Group("erase", (MALICIOUS,), PassRequest(states=True, frozen_states=True)),
            retain_group((BENIGN, PSEUDO_MALICIOUS), kl, logits=self._retain_ce),
        ]
        if options.context_augmentation:
            groups.append(Group("augment", (AUGMENTED,), PassRequest(logits=True)))
        return groups

    def prepare(self, context: PreparationContext) -> None:
        if not self.options.overlap_weighting:
            return
        malicious = context.examples.get(MALICIOUS, [])
        path = context.run_dir / OVERLAP_WEIGHTS_FILE
        if context.resume and path.is_file():
            records = read_overlap_weights(path)
            if sorted(record.id for record in records) == sorted(example.id for example in malicious):
                logger.info("reusing overlap weights from %s", path)
                self.weights = {record.id: record.weight for record in records}
                return
            logger.warning("%s does not match the malicious examples; computing the weights again", path)
        records = compute_overlap_weights(
            context.loaded,
            malicious,
            context.examples.get(PSEUDO_MALICIOUS, []),
            self.options.overlap,
            system_prompt=context.system_prompt,
        )
        write_overlap_weights(path, records)
        self.weights = {record.id: record.weight for record in records}

    @property
    def _retain_ce(self) -> bool:
        return self.options.context_augmentation and self.options.retain_ce_weight > 0

    def _batch_weights(self, outputs: PassOutputs) -> torch.Tensor | None:
        if not self.options.overlap_weighting:
            return None
        values = [self.weights[item.example.id] for item in outputs.batch.examples]
        return torch.tensor(values, dtype=torch.float32, device=outputs.batch.input_ids.device)

    def loss_terms(self, group: str, outputs: PassOutputs, progress: Progress) -> list[LossTerm]:
        options = self.options
        batch = outputs.batch
        if group == "augment":
            value = losses.cross_entropy_loss(outputs.logits, batch.target_ids, batch.sample_index, batch.size)
            return [LossTerm("augmentation_ce", value, options.augmentation_weight)]

        if group == "erase":
            weights = self._batch_weights(outputs)
            if options.erasure == "repbend":
                return bend_terms(outputs, options.repbend, weights)
            reroute_coefficient, _ = circuit_breaker_schedule(options.circuit_breakers.alpha, progress)
            value = losses.reroute_loss(outputs.states, outputs.frozen_states, batch.sample_index, batch.size, weights)
            return [LossTerm("reroute", value, reroute_coefficient)]

        if options.erasure == "repbend":
            terms = bend_retain_terms(outputs, options.repbend)
        else:
            cb = options.circuit_breakers
            _, retain_coefficient = circuit_breaker_schedule(cb.alpha, progress)
            kl_coefficient = cb.kl_weight * retain_coefficient if cb.retain_kl else None
            terms = retain_terms(outputs, retain_coefficient, kl_coefficient, relative=cb.relative_retain)
        if self._retain_ce:
            value = losses.cross_entropy_loss(outputs.logits, batch.target_ids, batch.sample_index, batch.size)
            terms.append(LossTerm("retain_ce", value, options.retain_ce_weight))
        return terms
