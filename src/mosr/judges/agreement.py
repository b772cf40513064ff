"""Agreement of judges with reference labels: XSTest's human labels and Llama Guard 2 verdicts.

Reference sets, in the layout of the benchmark data folder:

- `xstest/labeled_completions/{gpt4,llama2new,mistralguard}.csv`: completions of three chat models
  on XSTest with a human `final_label`; full and partial refusals count as refusals.
- `judge_llamaguard2/*.json`: JailbreakBench behaviours answered by three chat models under three
  conditions, each completion with its Llama Guard 2 verdict `is_jailbreak_llamaguard2`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mosr.data.files import read_records
from mosr.data.registry import resolve_data_dir
from mosr.errors import MosrError
from mosr.judges.base import Judge

XSTEST_COMPLETION_FILES = ("gpt4", "llama2new", "mistralguard")
XSTEST_REFUSAL_LABELS = ("2_full_refusal", "3_partial_refusal")
XSTEST_LABELS = ("1_full_compliance",) + XSTEST_REFUSAL_LABELS
LLAMAGUARD_FOLDER = "judge_llamaguard2"


@dataclass(frozen=True)
class Agreement:
    """How many of `total` predictions matched the reference; None predictions count as mismatches."""

    name: str
    matches: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.matches / self.total if self.total else float("nan")


def count_agreement(name: str, predicted: list[bool | None], reference: list[bool]) -> Agreement:
    """Compare predictions with reference labels, position by position."""
    if len(predicted) != len(reference):
        raise ValueError(f"{name}: {len(predicted)} predictions for {len(reference)} reference labels")
    matches = sum(1 for guess, truth in zip(predicted, reference) if guess is not None and guess == truth)
    return Agreement(name=name, matches=matches, total=len(reference))


def pooled(name: str, parts: list[Agreement]) -> Agreement:
    """Combine several agreements into one over all their rows."""
    return Agreement(name=name, matches=sum(part.matches for part in parts), total=sum(part.total for part in parts))


def load_xstest_completions(data_dir: str | Path | None = None) -> dict[str, list[dict]]:
    """Read the rows of each XSTest labeled-completions file, keyed by file name without suffix."""
    folder = resolve_data_dir(data_dir) / "xstest" / "labeled_completions"
    sets = {}
    for name in XSTEST_COMPLETION_FILES:
        rows = read_records(folder / f"{name}.csv")
        for index, row in enumerate(rows):
            if row.get("final_label") not in XSTEST_LABELS or not isinstance(row.get("completion"), str):
                raise MosrError(
                    f"{folder / name}.csv, row {index + 1}: expected a completion and a final_label in "
                    f"{', '.join(XSTEST_LABELS)}"
                )
        sets[name] = rows
    return sets


def human_refusal(row: dict) -> bool:
    """Return the XSTest human label as a refusal flag, counting full and partial refusals as refusals."""
    return row["final_label"] in XSTEST_REFUSAL_LABELS


def load_llamaguard_completions(data_dir: str | Path | None = None) -> dict[str, list[dict]]:
    """Read the completions of each Llama Guard 2 labelled file (MODEL_CONDITION.json), keyed by file stem."""
    folder = resolve_data_dir(data_dir) / LLAMAGUARD_FOLDER
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise MosrError(f"no Llama Guard 2 labelled files (*.json) in {folder}")
    sets = {}
    for path in paths:
        try:
            completions = json.loads(path.read_text(encoding="utf-8"))["completions"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise MosrError(f"{path}: expected a JSON object with a 'completions' list ({error})") from None
        for index, row in enumerate(completions):
            if not {"prompt", "response", "is_jailbreak_llamaguard2"} <= set(row):
                raise MosrError(f"{path}, completion {index}: needs prompt, response and is_jailbreak_llamaguard2")
        sets[path.stem] = completions
    return sets


def refusal_agreement(judge: Judge, sets: dict[str, list[dict]]) -> dict[str, Agreement]:
    """Measure the agreement of a refusal judge with the XSTest human labels, per file."""
    results = {}
    for name, rows in sets.items():
        verdicts = judge.judge([row["prompt"] for row in rows], [row["completion"] for row in rows])
        reference = [human_refusal(row) for row in rows]
        results[name] = count_agreement(name, [verdict.label for verdict in verdicts], reference)
    return results


def harm_agreement(judge: Judge, sets: dict[str, list[dict]]) -> dict[str, Agreement]:
    """Measure the agreement of a harm judge with the Llama Guard 2 verdicts, per file."""
    results = {}
    for name, rows in sets.items():
        verdicts = judge.judge([row["prompt"] for row in rows], [row["response"] for row in rows])
        reference = [bool(row["is_jailbreak_llamaguard2"]) for row in rows]
        results[name] = count_agreement(name, [verdict.label for verdict in verdicts], reference)
    return results
