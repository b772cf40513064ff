"""`mosr analyze`: where pseudo-malicious prompts sit between benign and malicious ones in a model's hidden states.

A run folder gets:

- `analysis.json`: settings, group sizes, per-layer statistics, first-token scores and refusal links;
- `analysis.md`: the same as Markdown tables;
- `prompts.jsonl`: one row per prompt with its group, per-layer positions and boundary scores;
- `pca.png`, `layers.png`, `positions.png` (and the refusal AUROCs in `layers.png` with an evaluation run).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mosr.analysis.behaviour import (
    check_run_model,
    first_token_agreement,
    match_labels,
    read_refusal_labels,
    refusal_aurocs,
)
from mosr.analysis.first_token import REFUSAL_OPENERS, first_token_refusal_scores, refusal_token_ids
from mosr.analysis.groups import DEFAULT_GROUPS, load_groups
from mosr.analysis.plots import plot_layer_curves, plot_pca, plot_position_histograms
from mosr.analysis.report import render_markdown
from mosr.analysis.statistics import GROUPS, LayerStatistics, analyze_layers
from mosr.errors import MosrError
from mosr.models import LoadedModel, effective_system_prompt
from mosr.representations import POOLINGS, default_cache_dir, extract_hidden_states, resolve_layers
from mosr.runs import library_versions, write_json

logger = logging.getLogger(__name__)

DEFAULT_PLOT_PANELS = 4


@dataclass
class AnalysisSettings:
    """Settings of one boundary analysis; the defaults are those of `mosr analyze`."""

    layers: list[int] | None = None
    pooling: str = "last"
    final_norm: bool = True
    data_dir: str | None = None
    group_files: dict[str, str] = field(default_factory=dict)
    prompt_column: str = "prompt"
    limit_per_group: int | None = None
    seed: int = 0
    test_fraction: float = 0.25
    eval_run: str | None = None
    system_prompt: str | None = None
    raw_prompts: bool = False
    batch_size: int = 16
    plot_layers: list[int] | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    first_token_score: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        # Paths are stored as text so that the settings can be written to analysis.json as they are.
        self.group_files = {group: str(path) for group, path in self.group_files.items()}
        for name in ("data_dir", "eval_run", "cache_dir"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))


def choose_plot_layers(layers: list[int], requested: list[int] | None, count: int = DEFAULT_PLOT_PANELS) -> list[int]:
    """Return the requested plot layers after checking them, or up to `count` evenly spaced analyzed layers after 0."""
    if requested:
        missing = [layer for layer in requested if layer not in layers]
        if missing:
            raise MosrError(f"plot layer {missing[0]} is not among the analyzed layers ({', '.join(map(str, layers))})")
        return list(dict.fromkeys(requested))
    candidates = [layer for layer in layers if layer != 0] or layers
    picks = np.linspace(0, len(candidates) - 1, num=min(count, len(candidates)))
    return list(dict.fromkeys(candidates[int(round(index))] for index in picks))


def _check_settings(settings: AnalysisSettings) -> None:
    if settings.pooling not in POOLINGS:
        raise MosrError(f"unknown pooling {settings.pooling!r}: choose from {', '.join(POOLINGS)}")
    if settings.batch_size < 1:
        raise MosrError(f"batch size must be a positive number of prompts, got {settings.batch_size}")
    if not 0.0 < settings.test_fraction < 1.0:
        raise MosrError(f"test fraction must be between 0 and 1, got {settings.test_fraction}")


def load_settings_groups(settings: AnalysisSettings) -> dict[str, list]:
    """Load the three prompt groups that `settings` names."""
    return load_groups(
        data_dir=settings.data_dir,
        files=settings.group_files,
        prompt_column=settings.prompt_column,
        limit_per_group=settings.limit_per_group,
        seed=settings.seed,
    )


def analyze(
    loaded: LoadedModel,
    settings: AnalysisSettings,
    output: str | Path,
    *,
    groups: dict[str, list] | None = None,
) -> dict:
    """Run the boundary analysis of one model and write its run folder; return the content of analysis.json.

    `groups` may be the result of `load_settings_groups(settings)` when the caller loaded it already.
    """
    started = time.monotonic()
    _check_settings(settings)
    run_dir = Path(output)
    layers = resolve_layers(settings.layers, loaded.num_layers)
    requested_plot_layers = resolve_layers(settings.plot_layers, loaded.num_layers) if settings.plot_layers else None
    plot_layers = choose_plot_layers(layers, requested_plot_layers)

    if groups is None:
        groups = load_settings_groups(settings)
    # A bad evaluation run folder fails here, before the slow steps.
    refusal_labels = read_refusal_labels(settings.eval_run) if settings.eval_run else None
    system_text = None if settings.raw_prompts else effective_system_prompt(loaded.tokenizer, settings.system_prompt)
    if settings.eval_run:
        check_run_model(settings.eval_run, loaded.identity, system_text)

    prompts = {group: [sample.prompt for sample in groups[group]] for group in GROUPS}
    all_prompts = [prompt for group in GROUPS for prompt in prompts[group]]
    cache_dir = None
    if settings.use_cache:
        cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    # Both poolings are extracted and cached together, so that a rerun with the other pooling costs nothing.
    extracted = extract_hidden_states(
        loaded, all_prompts, pooling=POOLINGS, layers=layers, batch_size=settings.batch_size,
        system_prompt=settings.system_prompt, raw=settings.raw_prompts, final_norm=settings.final_norm,
        cache_dir=cache_dir, progress=settings.progress,
    )[settings.pooling]
    states = _split_by_group(extracted, prompts)

    logger.info("computing statistics for %d layers", len(layers))
    statistics = analyze_layers(states, prompts, layers, seed=settings.seed, test_fraction=settings.test_fraction)

    first_token = None
    scores = None
    if settings.first_token_score:
        scores = first_token_refusal_scores(
            loaded, all_prompts, batch_size=settings.batch_size, system_prompt=settings.system_prompt,
            raw=settings.raw_prompts, progress=settings.progress,
        )
        first_token = _first_token_summary(loaded, scores, prompts)

    refused = match_labels(all_prompts, refusal_labels) if refusal_labels is not None else None
    refusal = None
    if refused is not None:
        pseudo_slice = _group_slices(prompts)["pseudo_malicious"]
        refusal = refusal_aurocs(statistics, refused[pseudo_slice], seed=settings.seed)
        if first_token is not None:
            group_names = [group for group in GROUPS for _ in prompts[group]]
            first_token["agreement"] = first_token_agreement(scores, refused, group_names, seed=settings.seed)

    run_dir.mkdir(parents=True, exist_ok=True)
    plots = {
        "PCA of the three groups": plot_pca(states, plot_layers, layers, run_dir / "pca.png").name,
        "statistics across layers": plot_layer_curves(statistics, run_dir / "layers.png", refusal).name,
        "positions on the harmfulness direction": plot_position_histograms(
            statistics, plot_layers, run_dir / "positions.png").name,
    }
    _write_prompt_rows(run_dir / "prompts.jsonl", groups, statistics, scores, refused)

    result = {
        "model": loaded.identity,
        "settings": {**asdict(settings), "layers": layers, "plot_layers": plot_layers},
        "effective_system_prompt": system_text,
        "groups": {
            group: {
                "count": len(groups[group]),
                "source": settings.group_files.get(group) or " + ".join(DEFAULT_GROUPS[group]),
                "benchmarks": sorted({sample.benchmark for sample in groups[group]}),
            }
            for group in GROUPS
        },
        "layers": [item.summary() for item in statistics],
        "by_benchmark": _benchmark_breakdown(groups, statistics),
        "boundary_claim": {
            "layers_analyzed": len(statistics),
            "layers_holding": [item.layer for item in statistics if item.boundary_claim_holds],
        },
        "first_token": first_token,
        "refusal": refusal,
        "plots": plots,
        "libraries": library_versions(),
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    write_json(run_dir / "analysis.json", result)
    (run_dir / "analysis.md").write_text(render_markdown(result), encoding="utf-8")
    logger.info("wrote %s in %.0f s", run_dir, result["wall_time_s"])
    return result


def _group_slices(prompts: dict[str, list[str]]) -> dict[str, slice]:
    slices, start = {}, 0
    for group in GROUPS:
        slices[group] = slice(start, start + len(prompts[group]))
        start += len(prompts[group])
    return slices


def _split_by_group(array: np.ndarray, prompts: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {group: array[part] for group, part in _group_slices(prompts).items()}


def _benchmark_breakdown(groups: dict, statistics: list[LayerStatistics]) -> dict:
    """Return per-layer median position and mean boundary score of each source benchmark within each group.

    Groups mix benchmarks of different styles (XSTest's short questions, HarmBench's and Alpaca's
    instructions), so a group's position can reflect prompt style as much as harmfulness.
    """
    breakdown = {}
    for group in GROUPS:
        benchmarks = np.array([sample.benchmark for sample in groups[group]])
        for benchmark in dict.fromkeys(benchmarks.tolist()):
            selected = benchmarks == benchmark
            entry = {
                "group": group,
                "count": int(selected.sum()),
                "layers": [item.layer for item in statistics],
                "median_position": [_median_or_none(item.positions[group][selected]) for item in statistics],
                "mean_boundary": [_mean_or_none(item.boundary[group][selected]) for item in statistics],
            }
            if group == "pseudo_malicious":
                entry["called_malicious"] = [
                    float(np.mean(item.pseudo_probe_probability[selected] > 0.5)) for item in statistics
                ]
            breakdown[f"{group}/{benchmark}"] = entry
    return breakdown


def _median_or_none(values: np.ndarray) -> float | None:
    return _json_number(np.nanmedian(values)) if np.isfinite(values).any() else None


def _mean_or_none(values: np.ndarray) -> float | None:
    return _json_number(np.nanmean(values)) if np.isfinite(values).any() else None


def _first_token_summary(loaded: LoadedModel, scores: np.ndarray, prompts: dict[str, list[str]]) -> dict:
    token_ids = refusal_token_ids(loaded.tokenizer, REFUSAL_OPENERS)
    summary = {
        "openers": list(REFUSAL_OPENERS),
        "tokens": [loaded.tokenizer.decode([token_id]) for token_id in token_ids],
        "groups": {},
    }
    for group, part in _group_slices(prompts).items():
        values = scores[part]
        summary["groups"][group] = {
            "count": int(len(values)),
            "mean": float(np.mean(values)),
            "median": float(np.median(values)),
            "share_positive": float(np.mean(values > 0)),
        }
    return summary


def _json_number(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 6)


def _write_prompt_rows(
    path: Path,
    groups: dict,
    statistics: list[LayerStatistics],
    scores: np.ndarray | None,
    refused: np.ndarray | None,
) -> None:
    """Write prompts.jsonl: per prompt, its group, ids, per-layer position and boundary score, and behaviour.

Pseudo-malicious rows also get per-layer probe probabilities and distances to both group means.
"""
    rows = []
    index = 0
    for group in GROUPS:
        for row_in_group, sample in enumerate(groups[group]):
            row = {
                "group": group,
                "id": sample.id,
                "benchmark": sample.benchmark,
                "category": sample.category,
                "prompt": sample.prompt,
                "layers": [item.layer for item in statistics],
                "position": [_json_number(item.positions[group][row_in_group]) for item in statistics],
                "boundary": [_json_number(item.boundary[group][row_in_group]) for item in statistics],
            }
            if group == "pseudo_malicious":
                row["probe_probability"] = [_json_number(item.pseudo_probe_probability[row_in_group]) for item in statistics]
                row["distance_to_benign_mean"] = [
                    _json_number(item.pseudo_distance_to_benign[row_in_group]) for item in statistics
                ]
                row["distance_to_malicious_mean"] = [
                    _json_number(item.pseudo_distance_to_malicious[row_in_group]) for item in statistics
                ]
            if scores is not None:
                row["first_token_refusal_score"] = _json_number(scores[index])
            if refused is not None:
                row["refused"] = None if np.isnan(refused[index]) else bool(refused[index])
            rows.append(row)
            index += 1
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    partial.replace(path)
