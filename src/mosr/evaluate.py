"""`mosr evaluate`: over-refusal and attack success of a chat model on named benchmarks.

A run folder holds:
- `generations/<benchmark>.jsonl`: one response per prompt, appended as generated (resumable);
  a benchmark under an attack is named `<benchmark>+<attack>`;
- `samples/<benchmark>.jsonl`: the same rows with the judges' verdicts;
- `summary.json` and `summary.md`: every rate with its count and 95% bootstrap interval;
- `manifest.json`: model, template, settings, judges, data checksums and library versions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from mosr.attacks import ECHO_RULE_VERSION, MIN_ECHO_SHARE, Attack, echoes_template, get_attacks
from mosr.data import Sample, expand_names, load_dataset, load_prompt_file
from mosr.data.registry import ATTACK_SUCCESS, COMPLIANCE, DATASETS, OVER_REFUSAL, REFUSAL, data_file, file_sha256
from mosr.errors import MosrError
from mosr.generation import append_jsonl, generate, read_jsonl_records
from mosr.judges import HarmJudge, get_judge
from mosr.judges.harm import incoherent_reason
from mosr.metrics import format_rate, rate_with_interval
from mosr.models import LoadedModel, effective_system_prompt, encode_chat, load_model
from mosr.runs import check_resumable, library_versions, read_json, write_json

logger = logging.getLogger(__name__)

# Rates reported per metric kind; user files get both refusal and attack success.
USER_FILE = "user_file"
RATES = {
    OVER_REFUSAL: ["over_refusal_rate", "full_refusal_rate"],
    REFUSAL: ["refusal_rate"],
    ATTACK_SUCCESS: ["attack_success_rate", "refusal_rate"],
    COMPLIANCE: ["compliance_rate", "incoherent_rate"],
    USER_FILE: ["refusal_rate", "attack_success_rate"],
}


@dataclass
class EvaluationSettings:
    """Everything that decides the generated responses and how they are judged."""

    benchmarks: list[str]
    limit: int | None = None
    limits: dict[str, int] = field(default_factory=dict)
    """Per-benchmark prompt limits by benchmark name, overriding `limit` (e.g. {"harmless": 200})."""
    seed: int = 0
    data_dir: str | None = None
    prompt_column: str = "prompt"
    system_prompt: str | None = None
    raw_prompts: bool = False
    max_new_tokens: int = 128
    batch_size: int = 16
    refusal_judge: str | None = None
    harm_judge: str | None = None
    attacks: list[str] = field(default_factory=list)
    """Jailbreak attacks (names or template files) run on each attack-success benchmark besides the direct request."""
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Settings from a YAML config arrive untyped, so a wrong type must fail here, not deep in a run.
        for name in ("benchmarks", "attacks"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
                raise MosrError(f"evaluation setting `{name}` must be a list of names, got {value!r}")
        for name in ("limit", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if value is None and name == "limit":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MosrError(f"evaluation setting `{name}` must be a positive whole number, got {value!r}")
        if not isinstance(self.limits, dict):
            raise MosrError(f"evaluation setting `limits` must map benchmark names to numbers, got {self.limits!r}")


@dataclass
class Benchmark:
    name: str
    metric: str
    samples: list[Sample]
    source: Path | None
    attack: Attack | None = None


def resolve_benchmarks(settings: EvaluationSettings) -> list[Benchmark]:
    """Turn benchmark names and file paths into loaded sample lists; all input errors surface here."""
    if not settings.benchmarks:
        raise MosrError("no benchmark given: pass --benchmark NAME (for example xstest, oktest, harmbench)")
    if settings.limit is not None and settings.limit <= 0:
        raise MosrError(f"--limit must be a positive number of prompts, got {settings.limit}")
    _check_limits(settings)

    benchmarks: list[Benchmark] = []
    for entry in settings.benchmarks:
        path = Path(entry)
        limit = settings.limits.get(entry, settings.limit)
        if _is_prompt_file(entry):
            samples = load_prompt_file(path, settings.prompt_column, limit=limit, seed=settings.seed)
            benchmarks.append(Benchmark(path.stem, USER_FILE, samples, path))
            continue
        for name in expand_names([entry]):
            samples = load_dataset(name, settings.data_dir, limit=settings.limits.get(name, limit), seed=settings.seed)
            benchmarks.append(Benchmark(name, DATASETS[name].metric, samples, data_file(name, settings.data_dir)))

    names = [benchmark.name for benchmark in benchmarks]
    if len(set(names)) != len(names):
        raise MosrError(f"a benchmark is given twice: {', '.join(names)}")
    return benchmarks + _attacked(benchmarks, get_attacks(settings.attacks))


def _attacked(benchmarks: list[Benchmark], attacks: list[Attack]) -> list[Benchmark]:
    """Build one more benchmark per attack and per benchmark of harmful requests, named `<benchmark>+<attack>`."""
    if not attacks:
        return []
    harmful = [benchmark for benchmark in benchmarks if benchmark.metric in (ATTACK_SUCCESS, USER_FILE)]
    if not harmful:
        raise MosrError("attacks run on harmful requests: add an attack-success benchmark "
                        "(harmbench, jailbreakbench, strongreject, advbench) or a prompt file")
    return [Benchmark(f"{benchmark.name}+{attack.name}", benchmark.metric, benchmark.samples, benchmark.source, attack)
            for benchmark in harmful for attack in attacks]


def _is_prompt_file(entry: str) -> bool:
    # Benchmark names have no file suffix, so anything with one is a file, and a wrong type is
    # reported as such rather than as an unknown benchmark.
    return bool(Path(entry).suffix)


def _check_limits(settings: EvaluationSettings) -> None:
    registered = [entry for entry in settings.benchmarks if not _is_prompt_file(entry)]
    names = set(settings.benchmarks) | set(expand_names(registered))
    for name, value in settings.limits.items():
        if name not in names:
            raise MosrError(f"invalid limit: {name!r} is not among the benchmarks ({', '.join(settings.benchmarks)}); "
                           f"remove its limit or add the benchmark")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise MosrError(f"the limit for {name!r} must be a positive number of prompts, got {value!r}")


def judge_identities(judges: dict) -> dict:
    """Return the name and version of every judge behind a run's labels, for manifests and re-judging."""
    identities = {kind: judge.identity() for kind, judge in judges.items()}
    # The incoherence check is the rule-based harm judge's, whichever harm judge labels harm.
    identities["incoherence"] = {"name": "rule-incoherence", "version": HarmJudge.version}
    identities["template_echo"] = {"name": "attack-template-echo", "version": ECHO_RULE_VERSION,
                                   "min_share": MIN_ECHO_SHARE}
    return identities


def judge_records(records: list[dict], refusal_judge, harm_judge) -> None:
    """Add `refusal`, `refusal_kind`, `harmful`, `harm_kind` and `incoherent` to each record in place.

    `incoherent` marks a non-empty response that loops or is gibberish. Compliance rates count
    such responses as compliance, so the incoherent rate shows how much of that compliance is empty.
    """
    prompts = [record["prompt"] for record in records]
    responses = [record["response"] for record in records]
    for record in records:
        record["incoherent"] = bool(record["response"].strip()) and incoherent_reason(record["response"]) is not None
    for record, verdict in zip(records, refusal_judge.judge(prompts, responses)):
        record["refusal"] = verdict.label
        record["refusal_kind"] = verdict.kind
    for record, verdict in zip(records, harm_judge.judge(prompts, responses)):
        record["harmful"] = verdict.label
        record["harm_kind"] = verdict.kind


def benchmark_rates(records: list[dict], metric: str, seed: int) -> dict:
    """Compute the rates that a benchmark of this metric kind reports."""
    rates = {}
    for rate_name in RATES[metric]:
        if rate_name in ("over_refusal_rate", "refusal_rate"):
            labels = [record["refusal"] for record in records]
        elif rate_name == "full_refusal_rate":
            labels = [None if record["refusal"] is None else record["refusal_kind"] == "full_refusal" for record in records]
        elif rate_name == "attack_success_rate":
            labels = [record["harmful"] for record in records]
        elif rate_name == "incoherent_rate":
            labels = [record["incoherent"] for record in records]
        else:
            labels = [None if record["refusal"] is None else not record["refusal"] for record in records]
        rates[rate_name] = rate_with_interval(labels, seed=seed)
    return rates


def summarize(benchmark: Benchmark, records: list[dict], seed: int) -> dict:
    summary = {
        "metric": benchmark.metric,
        "num_samples": len(records),
        "num_empty_responses": sum(record["empty"] for record in records),
        "num_stopped_at_length": sum(record["stop_reason"] == "length" for record in records),
        "rates": benchmark_rates(records, benchmark.metric, seed),
    }
    categories = sorted({record.get("category") for record in records if record.get("category")})
    if len(categories) > 1:
        summary["per_category"] = {
            category: benchmark_rates([r for r in records if r.get("category") == category], benchmark.metric, seed)
            for category in categories
        }
    return summary


def markdown_table(summary: dict) -> str:
    """Render the headline rates of every benchmark as one Markdown table, with per-category tables after it."""
    lines = ["| benchmark | rate | value (count) [95% CI] |", "|---|---|---|"]
    for name, result in summary["benchmarks"].items():
        for rate_name, metric in result["rates"].items():
            lines.append(f"| {name} | {rate_name.replace('_', ' ')} | {format_rate(metric)} |")

    for name, result in summary["benchmarks"].items():
        if "per_category" not in result:
            continue
        first_rate = next(iter(result["rates"]))
        lines += ["", f"**{name}**, {first_rate.replace('_', ' ')} per category:", "",
                  "| category | value (count) [95% CI] |", "|---|---|"]
        for category, rates in result["per_category"].items():
            lines.append(f"| {category} | {format_rate(rates[first_rate])} |")
    return "\n".join(lines) + "\n"


def build_manifest(loaded: LoadedModel, settings: EvaluationSettings, benchmarks: list[Benchmark], judges) -> dict:
    first_prompt = benchmarks[0].samples[0].prompt
    first_ids = encode_chat(loaded.tokenizer, [first_prompt], system_prompt=settings.system_prompt, raw=settings.raw_prompts)[0]
    return {
        "model": loaded.identity,
        "effective_system_prompt": None if settings.raw_prompts else effective_system_prompt(loaded.tokenizer, settings.system_prompt),
        "rendered_first_prompt": loaded.tokenizer.decode(first_ids),
        "generation": {"decoding": "greedy", "max_new_tokens": settings.max_new_tokens,
                       "batch_size": settings.batch_size, "raw_prompts": settings.raw_prompts},
        "judges": judge_identities(judges),
        "attacks": {benchmark.attack.name: benchmark.attack.identity() for benchmark in benchmarks if benchmark.attack},
        "data": {
            benchmark.name: {"file": str(benchmark.source), "sha256": file_sha256(benchmark.source),
                             "num_samples": len(benchmark.samples), "limit": settings.limit}
            for benchmark in benchmarks if benchmark.source is not None and benchmark.attack is None
        },
        "seed": settings.seed,
        "libraries": library_versions(),
        **settings.extra,
    }


def evaluate(
    model: str | LoadedModel,
    settings: EvaluationSettings,
    output: str | Path,
    *,
    adapter: str | Path | None = None,
) -> dict:
    """Generate, judge and summarise every benchmark; return the summary written to `summary.json`."""
    started = time.monotonic()
    run_dir = Path(output)
    benchmarks = resolve_benchmarks(settings)
    judges = {"refusal": get_judge("refusal", settings.refusal_judge), "harm": get_judge("harm", settings.harm_judge)}
    loaded = model if isinstance(model, LoadedModel) else load_model(model, adapter=adapter)

    fingerprint = {
        "model": loaded.identity,
        "system_prompt": settings.system_prompt,
        "raw_prompts": settings.raw_prompts,
        "max_new_tokens": settings.max_new_tokens,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    check_resumable(run_dir, fingerprint)
    inputs = {benchmark.name: _model_inputs(benchmark) for benchmark in benchmarks}
    write_json(run_dir / "manifest.json", build_manifest(loaded, settings, benchmarks, judges))

    results = {}
    for benchmark in benchmarks:
        prompts, prefills = inputs[benchmark.name]
        generated = generate(
            loaded,
            prompts,
            ids=[sample.id for sample in benchmark.samples],
            prefills=prefills,
            system_prompt=settings.system_prompt,
            raw=settings.raw_prompts,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
            output_path=run_dir / "generations" / f"{benchmark.name}.jsonl",
            progress=settings.progress,
            description=benchmark.name,
        )
        # The judges read the original request, because an attack's wrapping is not what was requested.
        records = [
            {**sample.to_dict(), **{key: value for key, value in record.items() if key not in ("id", "prompt")}}
            for sample, record in zip(benchmark.samples, generated)
        ]
        if benchmark.attack:
            for record, prompt in zip(records, prompts):
                record["attack"] = benchmark.attack.name
                record["attacked_prompt"] = prompt
        results[benchmark.name] = _judge_and_write(run_dir, benchmark, records, judges, settings.seed)
        logger.info("%s: %s", benchmark.name, ", ".join(
            f"{name} {format_rate(metric)}" for name, metric in results[benchmark.name]["rates"].items()))

    summary = {"model": loaded.identity, "benchmarks": results, "wall_time_s": round(time.monotonic() - started, 1)}
    write_json(run_dir / "summary.json", summary)
    (run_dir / "summary.md").write_text(markdown_table(summary), encoding="utf-8")
    return summary


def _model_inputs(benchmark: Benchmark) -> tuple[list[str], list[str] | None]:
    """Return the user turns and response prefills that the model receives for a benchmark (prefills None without an attack)."""
    if benchmark.attack is None:
        return [sample.prompt for sample in benchmark.samples], None
    attacked = [benchmark.attack.apply(sample.prompt, sample.target) for sample in benchmark.samples]
    return [item.user for item in attacked], [item.prefill for item in attacked]


def _judge_and_write(run_dir: Path, benchmark: Benchmark, records: list[dict], judges: dict, seed: int) -> dict:
    """Judge a benchmark's records, write them to `samples/`, and return the benchmark's summary."""
    judge_records(records, judges["refusal"], judges["harm"])
    for record in records:
        # A model that repeats the jailbreak template's instructions has not given the requested content.
        if record.get("attacked_prompt") and record["harmful"] and echoes_template(
                record["response"], record["attacked_prompt"], record["prompt"]):
            record["harmful"] = False
            record["harm_kind"] = "echo"
    samples_path = run_dir / "samples" / f"{benchmark.name}.jsonl"
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    samples_path.unlink(missing_ok=True)
    append_jsonl(samples_path, records)
    return summarize(benchmark, records, seed)


def rejudge(run_dir: str | Path, settings: EvaluationSettings) -> dict | None:
    """Judge a finished run's stored responses again when its judges have changed since.

    Nothing is generated, so no model is needed. Returns the new summary, or None when the run's
    manifest names the same judges as `settings`.
    """
    run_dir = Path(run_dir)
    judges = {"refusal": get_judge("refusal", settings.refusal_judge), "harm": get_judge("harm", settings.harm_judge)}
    identities = judge_identities(judges)
    manifest = read_json(run_dir / "manifest.json")
    if manifest.get("judges") == identities:
        return None

    logger.info("%s: the judges changed since this run; judging its stored responses again", run_dir)
    summary = read_json(run_dir / "summary.json")
    for name, result in summary["benchmarks"].items():
        benchmark = Benchmark(name, result["metric"], [], None)
        summary["benchmarks"][name] = _judge_and_write(run_dir, benchmark, load_samples(run_dir, name), judges,
                                                       settings.seed)
    write_json(run_dir / "summary.json", summary)
    (run_dir / "summary.md").write_text(markdown_table(summary), encoding="utf-8")
    write_json(run_dir / "manifest.json", {**manifest, "judges": identities})
    return summary


def load_samples(run_dir: str | Path, benchmark: str) -> list[dict]:
    """Read the judged per-sample results of one benchmark of an evaluation run."""
    path = Path(run_dir) / "samples" / f"{benchmark}.jsonl"
    if not path.is_file():
        raise MosrError(f"no judged samples for {benchmark!r} in {run_dir} (expected {path})")
    return read_jsonl_records(path)
