"""The interface between defense methods and the shared trainer: example groups and loss terms."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from mosr.defenses.forward import PassOutputs, PassRequest
from mosr.errors import MosrError


@dataclass(frozen=True)
class Group:
    """A stream of batches drawn from examples of some kinds, and the passes its losses need."""

    name: str
    kinds: tuple[str, ...]
    request: PassRequest


@dataclass(frozen=True)
class LossTerm:
    """One named loss term of a step; the trainer minimises the sum of `coefficient * value`."""

    name: str
    value: torch.Tensor
    coefficient: float


@dataclass(frozen=True)
class Progress:
    """Training progress: `step` steps are done (0 during the first step) out of `total_steps`."""

    step: int
    total_steps: int


@dataclass
class PreparationContext:
    """Inputs a method may use before training starts."""

    loaded: Any
    """The `LoadedModel`, still without adapters."""
    examples: dict[str, list]
    """Training examples (`TrainingExample`) by kind."""
    run_dir: Path
    system_prompt: str | None
    resume: bool
    """True when continuing an earlier run in `run_dir`, whose saved files may be reused."""


def circuit_breaker_schedule(alpha: float, progress: Progress) -> tuple[float, float]:
    """Return the (rerouting, retain) coefficients of the Circuit Breakers paper (Zou et al., 2024).

    With t = steps done and T = total steps: rerouting `alpha * (1 - t / (2T))`, retain
    `alpha * t / (2T)`. Rerouting starts at alpha and ends at alpha / 2; retain grows from 0.
    """
    fraction = progress.step / (2 * progress.total_steps)
    return alpha * (1.0 - fraction), alpha * fraction


class Method(ABC):
    """A defense: the example groups drawn at each step and the loss terms computed on them."""

    name: ClassVar[str]
    options_class: ClassVar[type]

    def __init__(self, options=None):
        self.options = options if options is not None else self.options_class()

    @abstractmethod
    def groups(self) -> list[Group]:
        """Return the groups drawn at every step, in the order their losses are computed."""

    @abstractmethod
    def loss_terms(self, group: str, outputs: PassOutputs, progress: Progress) -> list[LossTerm]:
        """Compute the loss terms of one group's batch."""

    def prepare(self, context: PreparationContext) -> None:
        """Compute whatever the method needs before training (MOSR's overlap weights); no-op by default."""

    def options_dict(self) -> dict:
        return dataclasses.asdict(self.options)


def options_from_dict(options_class: type, values: dict | None):
    """Build an options dataclass from a dict, rejecting unknown keys with their names."""
    values = dict(values or {})
    known = {field.name: field for field in dataclasses.fields(options_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise MosrError(
            f"unknown option(s) {', '.join(unknown)} for {options_class.__name__}: known options are {', '.join(known)}"
        )
    converted = {}
    for key, value in values.items():
        # Nested option dataclasses (MOSR's overlap settings) come back from JSON as dicts.
        default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = options_from_dict(type(default), value)
        converted[key] = value
    return options_class(**converted)
