"""The three prompt groups of a boundary analysis: benign, pseudo-malicious and malicious.

By default each group is a union of named evaluation sets (DEFAULT_GROUPS). Any group can be
replaced by a user CSV, JSONL or JSON file of prompts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mosr.analysis.statistics import GROUPS
from mosr.data import Sample, load_dataset, load_prompt_file
from mosr.data.registry import subsample
from mosr.errors import MosrError

logger = logging.getLogger(__name__)

DEFAULT_GROUPS = {
    "benign": ("harmless",),
    "pseudo_malicious": ("xstest-safe", "oktest"),
    "malicious": ("xstest-unsafe", "harmbench"),
}


def load_groups(
    *,
    data_dir: str | Path | None = None,
    files: dict[str, str | Path | None] | None = None,
    prompt_column: str = "prompt",
    limit_per_group: int | None = None,
    seed: int = 0,
) -> dict[str, list[Sample]]:
    """Load the three groups, each from its default data sets or from the user file given in `files`.

    `limit_per_group` keeps a seeded random subset of each group, taken over the union of its data
    sets. Every group needs at least 2 prompts, and no prompt text may be in two groups.
    """
    if limit_per_group is not None and limit_per_group < 2:
        raise MosrError(f"--limit-per-group must be at least 2, got {limit_per_group}")
    files = files or {}
    unknown = sorted(set(files) - set(GROUPS))
    if unknown:
        raise MosrError(f"unknown group {unknown[0]!r}: choose from {', '.join(GROUPS)}")

    groups: dict[str, list[Sample]] = {}
    for group in GROUPS:
        path = files.get(group)
        if path is not None:
            samples = load_prompt_file(path, prompt_column, name=Path(path).stem)
            source = str(path)
        else:
            samples = [sample for name in DEFAULT_GROUPS[group] for sample in load_dataset(name, data_dir)]
            source = " + ".join(DEFAULT_GROUPS[group])
        samples = subsample(samples, limit_per_group, seed)
        if len(samples) < 2:
            raise MosrError(
                f"the {group.replace('_', '-')} group ({source}) has {len(samples)} prompt(s); at least 2 are needed"
            )
        logger.info("%s group: %d prompts from %s", group, len(samples), source)
        groups[group] = samples

    _check_disjoint(groups)
    return groups


def _check_disjoint(groups: dict[str, list[Sample]]) -> None:
    owner: dict[str, str] = {}
    for group, samples in groups.items():
        for sample in samples:
            previous = owner.setdefault(sample.prompt, group)
            if previous != group:
                raise MosrError(
                    f"the prompt {sample.prompt[:60]!r} is in both the {previous} and the {group} group: "
                    "remove it from one of the files"
                )
