"""Settings shared by every defense method, and their defaults for a given model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mosr.defenses.lora import check_lora_layers, check_loss_layers, default_lora_layers, default_loss_layers
from mosr.errors import MosrError


@dataclass
class TrainingSettings:
    """Optimisation, LoRA and checkpoint settings of one training run.

    The defaults train each method on SmolLM2-135M-Instruct (30 blocks) on two CPU cores in a few
    minutes; docs/training.md gives the measured times.
    """

    steps: int = 80
    """Optimizer steps. Each step draws one batch from every example group of the method."""
    batch_size: int = 4
    """Examples per group and step."""
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from 0; constant afterwards."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold."""
    max_length: int = 256
    """Tokens per example; longer conversations are cut at the end."""
    seed: int = 0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_init_std: float = 0.01
    """Standard deviation of the initial lora_B entries; 0 is peft's zero initialisation (see docs/training.md)."""
    lora_layers: list[int] | None = None
    """Decoder blocks (from 0) that get adapters; None picks the window in `default_lora_layers`."""
    lora_modules: list[str] | None = None
    """Linear-layer names to adapt; None uses the architecture's attention and MLP projections."""
    loss_layers: list[int] | None = None
    """Hidden-state indices (1 = output of block 0) for representation losses; None picks L/3 and 2L/3."""
    system_prompt: str | None = None
    """System message of every training conversation; None keeps the chat template's default."""
    checkpoint_every: int = 25
    """Steps between checkpoints from which an interrupted run resumes."""
    keep_checkpoints: int = 2
    gradient_checkpointing: bool = False
    """Recompute block activations in the backward pass to save memory (slower)."""
    frozen_cache_mb: int = 2048
    """CPU memory for the frozen model's per-example states, reused when an example is drawn again; 0 turns it off."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "max_length", "lora_rank", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MosrError(f"{name} must be a positive whole number, got {value!r}")
        if self.frozen_cache_mb < 0:
            raise MosrError(f"frozen_cache_mb must be zero or positive, got {self.frozen_cache_mb}")
        if self.warmup_steps < 0:
            raise MosrError(f"warmup_steps must be zero or positive, got {self.warmup_steps}")
        if not self.learning_rate > 0:
            raise MosrError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.lora_init_std < 0:
            raise MosrError(f"lora_init_std must be zero or positive, got {self.lora_init_std}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise MosrError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.max_grad_norm > 0:
            raise MosrError(f"max_grad_norm must be positive, got {self.max_grad_norm}")

    def resolved(self, num_layers: int) -> TrainingSettings:
        """Return a copy with the layer defaults filled in for a model of `num_layers` blocks, all checked."""
        loss_layers = check_loss_layers(
            list(self.loss_layers) if self.loss_layers is not None else default_loss_layers(num_layers), num_layers
        )
        lora_layers = check_lora_layers(
            list(self.lora_layers) if self.lora_layers is not None else default_lora_layers(num_layers, loss_layers),
            num_layers,
        )
        return dataclasses.replace(self, loss_layers=loss_layers, lora_layers=lora_layers)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainingSettings:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MosrError(f"unknown training setting(s) {', '.join(unknown)}: known settings are {', '.join(sorted(known))}")
        return cls(**values)
