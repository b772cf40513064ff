"""Link hidden-state statistics to judged behaviour from a `mosr evaluate` run folder.

An evaluation run stores `samples/<benchmark>.jsonl`, one judged response per line with at least
`prompt` and `refusal` (true, false or null when the judge abstained). Analysed prompts are
matched to these rows by prompt text, after stripping surrounding whitespace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mosr.analysis.statistics import LayerStatistics, auroc, auroc_interval
from mosr.errors import MosrError

logger = logging.getLogger(__name__)


def read_refusal_labels(run_dir: str | Path) -> dict[str, bool]:
    """Read prompt text -> refused from every samples/*.jsonl file of an evaluation run.

    Rows whose `refusal` is null are skipped. A prompt judged both ways in different rows is
    dropped, with a logged warning, because its label is ambiguous.
    """
    run_dir = Path(run_dir)
    samples_dir = run_dir / "samples"
    if not samples_dir.is_dir():
        raise MosrError(f"{run_dir} is not an evaluation run folder: {samples_dir} not found (run `mosr evaluate` first)")
    files = sorted(samples_dir.glob("*.jsonl"))
    if not files:
        raise MosrError(f"{samples_dir} contains no .jsonl files of judged samples")

    labels: dict[str, bool] = {}
    conflicting: set[str] = set()
    abstained = 0
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MosrError(f"{path}, line {number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or "prompt" not in record or "refusal" not in record:
                raise MosrError(f"{path}, line {number}: expected an object with 'prompt' and 'refusal' fields")
            refusal = record["refusal"]
            if refusal is None:
                abstained += 1
                continue
            if not isinstance(refusal, bool):
                raise MosrError(f"{path}, line {number}: 'refusal' must be true, false or null, got {refusal!r}")
            prompt = str(record["prompt"]).strip()
            if labels.setdefault(prompt, refusal) != refusal:
                conflicting.add(prompt)
    for prompt in conflicting:
        del labels[prompt]
    if conflicting:
        logger.warning("%s: dropped %d prompts judged both refused and not refused", run_dir, len(conflicting))
    if abstained:
        logger.info("%s: skipped %d samples without a refusal verdict", run_dir, abstained)
    return labels


def check_run_model(run_dir: str | Path, identity: dict, system_prompt: str | None) -> None:
    """Log a warning when the evaluation run's manifest names another model, adapter or system prompt.

    `identity` and `system_prompt` describe the analyzed model and the system text its prompts carry.
    """
    manifest_path = Path(run_dir) / "manifest.json"
    if not manifest_path.is_file():
        logger.warning("%s has no manifest.json, so its model cannot be checked against the analyzed one", run_dir)
        return
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("could not read %s: %s", manifest_path, error)
        return
    run_model = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(run_model, dict):
        return
    for key in ("source", "adapter"):
        if run_model.get(key) != identity.get(key):
            logger.warning(
                "the evaluation run used %s %r but the analysis uses %r: refusal labels may not match these hidden states",
                key, run_model.get(key), identity.get(key),
            )
    if "effective_system_prompt" in manifest and manifest["effective_system_prompt"] != system_prompt:
        logger.warning(
            "the evaluation run used the system prompt %r but the analysis uses %r",
            manifest["effective_system_prompt"], system_prompt,
        )


def match_labels(prompts: Sequence[str], labels: dict[str, bool]) -> np.ndarray:
    """Return a float array of 1.0 (refused), 0.0 (complied) or NaN (no verdict) per prompt."""
    return np.array([float(labels[p.strip()]) if p.strip() in labels else np.nan for p in prompts])


def refusal_aurocs(statistics: list[LayerStatistics], pseudo_refused: np.ndarray, *, seed: int = 0) -> dict:
    """Compute per layer how well boundary score, position and probe probability predict refusal of pseudo-malicious prompts.

    `pseudo_refused` contains 1.0, 0.0 or NaN per pseudo-malicious prompt. Returns
    {"matched", "refused", "layers": [...]}, where each layer row has `boundary_auroc`,
    `position_auroc` and `probe_auroc` with a 95% bootstrap interval under the same name plus
    `_interval`. Returns {"matched", "refused", "skipped": reason} when the matched prompts are
    not of both classes.
    """
    known = ~np.isnan(pseudo_refused)
    matched = int(known.sum())
    refused = int(np.nansum(pseudo_refused))
    if matched == 0:
        reason = "no pseudo-malicious prompt of this analysis was found in the evaluation run"
    elif refused in (0, matched):
        reason = f"all {matched} matched pseudo-malicious prompts were {'refused' if refused else 'complied with'}"
    else:
        reason = None
    if reason is not None:
        logger.info("skipping refusal AUROCs: %s", reason)
        return {"matched": matched, "refused": refused, "skipped": reason}

    labels = pseudo_refused[known].astype(bool)
    layers = []
    for layer_statistics in statistics:
        predictors = {
            "boundary_auroc": layer_statistics.boundary["pseudo_malicious"][known],
            "position_auroc": layer_statistics.positions["pseudo_malicious"][known],
            "probe_auroc": layer_statistics.pseudo_probe_probability[known],
        }
        row = {"layer": layer_statistics.layer}
        for name, scores in predictors.items():
            row[name] = auroc(scores, labels)
            row[f"{name}_interval"] = auroc_interval(scores, labels, seed=seed)
        layers.append(row)
    return {"matched": matched, "refused": refused, "layers": layers}


def first_token_agreement(scores: np.ndarray, refused: np.ndarray, groups: Sequence[str], *, seed: int = 0) -> dict:
    """Compute the AUROC, with a 95% bootstrap interval, of first-token refusal scores against judged refusal, overall and per group."""
    scores = np.asarray(scores, dtype=float)
    refused = np.asarray(refused, dtype=float)
    groups = np.asarray(groups)
    result = {}
    for name in ["all", *dict.fromkeys(groups.tolist())]:
        selected = ~np.isnan(refused) if name == "all" else (~np.isnan(refused)) & (groups == name)
        labels = refused[selected].astype(bool)
        result[name] = {
            "matched": int(selected.sum()),
            "refused": int(labels.sum()),
            "auroc": auroc(scores[selected], labels),
            "auroc_interval": auroc_interval(scores[selected], labels, seed=seed),
        }
        if result[name]["auroc"] is None and selected.any():
            logger.info("first-token score AUROC for %s is undefined: the matched prompts are of one class", name)
    return result
