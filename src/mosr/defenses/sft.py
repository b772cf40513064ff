"""Refusal SFT: cross-entropy on refusals to harmful prompts, plus cross-entropy on benign examples.

Loss terms, over response tokens and the end-of-turn token:
- `refusal_ce` on refusal examples, coefficient `refusal_weight`;
- `retain_ce` on benign examples (the base model's own responses) and pseudo-malicious examples
  (helpful responses), coefficient `retain_weight`. The retain examples are those of every other
  method, so that the methods differ in their losses, not in their data;
- `retain_kl` (off by default): KL(p_M0 || p_M) on the same examples, coefficient `kl_weight`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mosr.data.examples import BENIGN, PSEUDO_MALICIOUS, REFUSAL
from mosr.defenses import losses
from mosr.defenses.base import Group, LossTerm, Method, Progress
from mosr.defenses.forward import PassOutputs, PassRequest
from mosr.errors import MosrError


@dataclass
class SftOptions:
    """Settings of refusal SFT."""

    refusal_weight: float = 1.0
    retain_weight: float = 1.0
    retain_kl: bool = False
    kl_weight: float = 1.0

    def __post_init__(self):
        for name in ("refusal_weight", "retain_weight", "kl_weight"):
            if getattr(self, name) < 0:
                raise MosrError(f"{name} must be zero or positive, got {getattr(self, name)}")


class RefusalSft(Method):
    """Teach refusals by cross-entropy and keep benign behaviour by cross-entropy on the model's own responses."""

    name = "sft"
    options_class = SftOptions

    def groups(self) -> list[Group]:
        kl = self.options.retain_kl
        return [
            Group("refusal", (REFUSAL,), PassRequest(logits=True)),
            Group("retain", (BENIGN, PSEUDO_MALICIOUS), PassRequest(logits=True, frozen_logits=kl)),
        ]

    def loss_terms(self, group: str, outputs: PassOutputs, progress: Progress) -> list[LossTerm]:
        batch = outputs.batch
        cross_entropy = losses.cross_entropy_loss(outputs.logits, batch.target_ids, batch.sample_index, batch.size)
        if group == "refusal":
            return [LossTerm("refusal_ce", cross_entropy, self.options.refusal_weight)]
        terms = [LossTerm("retain_ce", cross_entropy, self.options.retain_weight)]
        if self.options.retain_kl:
            kl = losses.kl_loss(outputs.logits, outputs.frozen_logits, batch.sample_index, batch.size)
            terms.append(LossTerm("retain_kl", kl, self.options.kl_weight))
        return terms
