"""LoRA defenses against harmful requests: Circuit Breakers, RepBend, refusal SFT and MOSR.

`train` is the entry point; `mosr train` on the command line calls it (see `command.py`).
"""

from mosr.defenses.base import Group, LossTerm, Method, Progress
from mosr.defenses.methods import METHODS, create_method
from mosr.defenses.settings import TrainingSettings
from mosr.defenses.trainer import TrainingResult, examples_by_kind, train
from mosr.defenses.weighting import OverlapSettings

__all__ = [
    "METHODS",
    "Group",
    "LossTerm",
    "Method",
    "OverlapSettings",
    "Progress",
    "TrainingResult",
    "TrainingSettings",
    "create_method",
    "examples_by_kind",
    "train",
]
