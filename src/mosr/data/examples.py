"""The training example shared by the training-set builder and the defense trainer."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Kinds of training example; each defense picks the kinds its losses use.
MALICIOUS = "malicious"  # harmful prompt + the base model's own harmful completion (erased)
BENIGN = "benign"  # harmless prompt + the base model's own completion (retained)
PSEUDO_MALICIOUS = "pseudo_malicious"  # harmless prompt that looks harmful + helpful response (retained)
REFUSAL = "refusal"  # harmful prompt + refusal (cross-entropy)
AUGMENTED = "augmented"  # harmful prompt + first k tokens of a harmful completion + refusal
KINDS = (MALICIOUS, BENIGN, PSEUDO_MALICIOUS, REFUSAL, AUGMENTED)


@dataclass(frozen=True)
class TrainingExample:
    """One conversation to train on.

    The assistant turn is `response_prefix + response`. Losses apply to the tokens of `response`
    only; `response_prefix` is context (the harmful start that context-aware augmentation puts
    before a refusal) and is empty for every other kind.
    """

    id: str
    kind: str
    prompt: str
    response: str
    response_prefix: str = ""
    source: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown training example kind {self.kind!r}: expected one of {', '.join(KINDS)}")

    def to_dict(self) -> dict:
        return asdict(self)
