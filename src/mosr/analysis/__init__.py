"""Boundary analysis of hidden states: statistics, behaviour links, plots and the `mosr analyze` command.

`statistics` contains the pure numpy definitions (harmfulness direction, positions, boundary score,
probe); `run.analyze` ties extraction, statistics, plots and reports together.
"""

from mosr.analysis.first_token import REFUSAL_OPENERS, first_token_refusal_scores, refusal_token_ids
from mosr.analysis.run import AnalysisSettings, analyze
from mosr.analysis.statistics import (
    GROUPS,
    LayerStatistics,
    analyze_layer,
    analyze_layers,
    boundary_scores,
    harmfulness_direction,
    leave_one_out_positions,
    project_positions,
    split_by_prompt,
)

__all__ = [
    "GROUPS",
    "REFUSAL_OPENERS",
    "AnalysisSettings",
    "LayerStatistics",
    "analyze_layer",
    "analyze_layers",
    "analyze",
    "boundary_scores",
    "first_token_refusal_scores",
    "harmfulness_direction",
    "leave_one_out_positions",
    "project_positions",
    "refusal_token_ids",
    "split_by_prompt",
]
