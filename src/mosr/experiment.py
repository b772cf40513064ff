"""`mosr run CONFIG`: the whole study in one command.

Stages, each cached in the run folder under a name that includes a hash of its settings, so that a
stopped run continues and a changed method reruns only that method:

1. base model: evaluation (and the boundary analysis, where enabled);
2. the training set, built once from the base model and shared by every method;
3. per method (ablations and sweep values included): training, evaluation, KL to the base model;
4. one report (Markdown, HTML and a trade-off plot).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mosr.attacks import get_attacks
from mosr.errors import MosrError
from mosr.evaluate import EvaluationSettings, evaluate, load_samples, rejudge, resolve_benchmarks
from mosr.models import DEFAULT_MODEL, load_model
from mosr.report import ReportEntry, write_report
from mosr.runs import read_json, write_json

logger = logging.getLogger(__name__)

TOP_LEVEL_KEYS = {"name", "model", "seed", "data_dir", "system_prompt", "evaluation", "analysis",
                  "training_set", "training", "methods", "utility"}
METHOD_KEYS = {"name", "method", "group", "options", "training"}


@dataclass
class MethodSpec:
    """One trained model of the study: a method with its options, possibly one value of a sweep."""

    name: str
    method: str
    group: str = "method"
    options: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    sweep: str | None = None
    sweep_value: object = None


@dataclass
class StudyConfig:
    name: str
    model: str
    seed: int
    data_dir: str | None
    system_prompt: str | None
    evaluation: dict
    analysis: dict
    training_set: dict
    training: dict
    utility: dict
    methods: list[MethodSpec]


def _settings_hash(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _find_sweeps(options: dict, prefix: str = "") -> list[tuple[str, list]]:
    """Every option given as a list of values, as (dotted path, values)."""
    sweeps = []
    for key, value in options.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            sweeps += _find_sweeps(value, path + ".")
        elif isinstance(value, list) and not key.endswith("layers") and not key.endswith("modules") and not key.endswith("range"):
            sweeps.append((path, value))
    return sweeps


def _set_path(options: dict, path: str, value) -> dict:
    options = copy.deepcopy(options)
    node = options
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return options


def expand_methods(entries: list[dict]) -> list[MethodSpec]:
    """Turn config method entries into specs; an option given as a list becomes one spec per value."""
    if not entries:
        raise MosrError("the config lists no methods: add at least one under `methods`")
    specs: list[MethodSpec] = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise MosrError(f"a method entry must be a name or a mapping with a `name`, got {entry!r}")
        unknown = set(entry) - METHOD_KEYS
        if unknown:
            raise MosrError(f"method {entry.get('name')!r}: unknown keys {', '.join(sorted(unknown))}")
        if not isinstance(entry.get("name"), str) or not isinstance(entry.get("method", ""), str):
            raise MosrError(f"every method entry needs a `name` (and, if given, a `method`) as text, got {entry!r}")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise MosrError(f"method {entry['name']!r}: `options` must be a mapping, got {options!r}")
        base = dict(name=entry["name"], method=entry.get("method", entry["name"]), group=entry.get("group", "method"),
                    training=entry.get("training") or {})
        sweeps = _find_sweeps(options)
        if len(sweeps) > 1:
            raise MosrError(f"method {entry['name']!r} sweeps {len(sweeps)} settings at once; sweep one setting per entry")
        if not sweeps:
            specs.append(MethodSpec(options=options, **base))
            continue
        path, values = sweeps[0]
        for value in values:
            specs.append(MethodSpec(**{**base, "name": f"{entry['name']} {path.split('.')[-1]}={value}", "group": "sweep"},
                                    options=_set_path(options, path, value), sweep=path.split(".")[-1], sweep_value=value))
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise MosrError(f"method names must be unique; repeated: {', '.join(duplicates)}")
    return specs


def load_config(path: str | Path) -> StudyConfig:
    """Read and check an experiment config (YAML)."""
    path = Path(path)
    if not path.is_file():
        raise MosrError(f"config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise MosrError(f"{path} is not valid UTF-8 (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MosrError(f"{path} is not valid YAML{where}: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise MosrError(f"{path}: expected a mapping of settings at the top level")
    unknown = set(raw) - TOP_LEVEL_KEYS
    if unknown:
        raise MosrError(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")

    sections = {key: _mapping(raw, key, path) for key in ("evaluation", "analysis", "training_set", "training", "utility")}
    if not sections["evaluation"].get("benchmarks"):
        raise MosrError(f"{path}: `evaluation.benchmarks` must list at least one benchmark")
    for key in ("name", "model", "data_dir", "system_prompt"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise MosrError(f"{path}: `{key}` must be text, got {raw[key]!r}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MosrError(f"{path}: `seed` must be a whole number, got {seed!r}")
    methods = raw.get("methods") or []
    if not isinstance(methods, list):
        raise MosrError(f"{path}: `methods` must be a list of method entries, got {methods!r}")

    config = StudyConfig(
        name=raw.get("name", path.stem),
        model=raw.get("model", DEFAULT_MODEL),
        seed=seed,
        data_dir=raw.get("data_dir"),
        system_prompt=raw.get("system_prompt"),
        evaluation=sections["evaluation"],
        analysis=sections["analysis"] or {"enabled": False},
        training_set=sections["training_set"],
        training=sections["training"],
        utility=sections["utility"],
        methods=expand_methods(methods),
    )
    _check_sections(config, path)
    return config


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _mapping(raw: dict, key: str, path: Path) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise MosrError(f"{path}: `{key}` must be a mapping of settings, got {value!r}")
    return value


def _check_sections(config: StudyConfig, path: Path) -> None:
    """Check the settings of the later stages now, so that a typo stops the study before its first stage."""
    import inspect

    from mosr.analysis.run import AnalysisSettings
    from mosr.data.training_set import build_training_set
    from mosr.defenses.settings import TrainingSettings

    for key, value in config.training_set.items():
        valid = (isinstance(value, list) and len(value) == 2 and all(_is_count(item) for item in value)
                 if key == "augmentation_range" else value is None or _is_count(value))
        if not valid:
            raise MosrError(f"{path}: `training_set.{key}` must be a whole number (or null for all), got {value!r}")
    if "max_prompts" in config.utility and not (_is_count(config.utility["max_prompts"]) and config.utility["max_prompts"] > 0):
        raise MosrError(f"{path}: `utility.max_prompts` must be a positive whole number, got {config.utility['max_prompts']!r}")
    if not isinstance(config.analysis.get("enabled", True), bool):
        raise MosrError(f"{path}: `analysis.enabled` must be true or false, got {config.analysis['enabled']!r}")

    from mosr.defenses.methods import create_method

    for spec in config.methods:
        create_method(spec.method, spec.options)
        if not isinstance(spec.training, dict):
            raise MosrError(f"{path}: method {spec.name!r}: `training` must be a mapping of settings")
        try:
            TrainingSettings.from_dict({**config.training, **spec.training})
        except TypeError as error:
            raise MosrError(f"{path}: invalid training settings: {error}") from None

    checks = [
        ("training_set", config.training_set,
         set(inspect.signature(build_training_set).parameters) - {"loaded", "output_dir", "data_dir", "seed",
                                                                   "harm_judge", "refusal_judge", "progress"}),
        ("analysis", config.analysis,
         {item.name for item in dataclasses.fields(AnalysisSettings)} - {"data_dir", "seed", "eval_run", "progress"}
         | {"enabled"}),
        ("utility", config.utility, {"benchmark", "max_prompts"}),
    ]
    for section, values, known in checks:
        unknown = sorted(set(values) - known)
        if unknown:
            raise MosrError(f"{path}: unknown `{section}` settings {', '.join(unknown)} (known: {', '.join(sorted(known))})")


class Stage:
    """A cached step: its folder holds `stage.json` with the settings hash once the step has finished."""

    def __init__(self, folder: Path, settings: dict):
        self.folder = folder
        self.settings = settings
        self.key = _settings_hash(settings)

    @property
    def done(self) -> bool:
        marker = self.folder / "stage.json"
        return marker.is_file() and read_json(marker).get("key") == self.key

    def finish(self, result: dict) -> None:
        write_json(self.folder / "stage.json", {"key": self.key, "settings": self.settings, "result": result})

    def result(self) -> dict:
        return read_json(self.folder / "stage.json")["result"]


def _evaluation_settings(config: StudyConfig, data_dir: str | None) -> EvaluationSettings:
    evaluation = dict(config.evaluation)
    known = {f.name for f in dataclasses.fields(EvaluationSettings)} - {"extra", "progress"}
    unknown = set(evaluation) - known
    if unknown:
        raise MosrError(f"unknown evaluation settings: {', '.join(sorted(unknown))}")
    evaluation.setdefault("seed", config.seed)
    evaluation.setdefault("system_prompt", config.system_prompt)
    evaluation["data_dir"] = data_dir
    return EvaluationSettings(**evaluation)


class Study:
    """Runs the stages of one config into one run folder."""

    def __init__(self, config: StudyConfig, run_dir: str | Path, *, data_dir: str | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.data_dir = data_dir or config.data_dir
        self.evaluation = _evaluation_settings(config, self.data_dir)
        self.timings: dict[str, float] = {}

    def _evaluation_key(self) -> dict:
        key = {name: value for name, value in dataclasses.asdict(self.evaluation).items()
               if name not in ("data_dir", "attacks")}
        # Attacks enter the key only when given, so studies from before attacks existed keep their keys.
        # Their identities, not their names, go in, because a template file's text decides the prompts.
        if self.evaluation.attacks:
            key["attacks"] = [attack.identity() for attack in get_attacks(self.evaluation.attacks)]
        return key

    def _load_base(self):
        return load_model(self.config.model)

    # Stages -----------------------------------------------------------------------------------

    def base_evaluation(self) -> ReportEntry:
        stage = Stage(self.run_dir / "base" / "eval", {"model": self.config.model, "evaluation": self._evaluation_key()})
        if not stage.done:
            logger.info("evaluating the base model")
            summary = evaluate(self._load_base(), self.evaluation, stage.folder)
            stage.finish({"wall_time_s": summary["wall_time_s"]})
        else:
            rejudge(stage.folder, self.evaluation)
        summary = read_json(stage.folder / "summary.json")
        return ReportEntry(name="base model", summary=summary, group="base", run_dir=str(stage.folder))

    def base_analysis(self) -> Path | None:
        settings = dict(self.config.analysis)
        if not settings.pop("enabled", True):
            return None
        from mosr.analysis.run import AnalysisSettings, analyze

        stage = Stage(self.run_dir / "base" / "analysis", {"model": self.config.model, "analysis": settings})
        if not stage.done:
            logger.info("analysing the base model's hidden states")
            analysis_settings = AnalysisSettings(**{"data_dir": self.data_dir, "seed": self.config.seed,
                                                    "eval_run": str(self.run_dir / "base" / "eval"), **settings})
            analyze(self._load_base(), analysis_settings, stage.folder)
            stage.finish({})
        return stage.folder

    def training_set(self):
        from mosr.data.training_set import build_training_set, load_training_set

        settings = dict(self.config.training_set)
        stage = Stage(self.run_dir / f"training-set-{_settings_hash(self.config.model, settings, self.config.seed)}",
                      {"model": self.config.model, "training_set": settings, "seed": self.config.seed})
        if stage.done:
            return load_training_set(stage.folder)
        logger.info("building the training set")
        if "augmentation_range" in settings:
            settings["augmentation_range"] = tuple(settings["augmentation_range"])
        built = build_training_set(self._load_base(), output_dir=stage.folder, data_dir=self.data_dir,
                                   seed=self.config.seed, **settings)
        stage.finish({"counts": built.counts()})
        return built

    def method(self, spec: MethodSpec, training_set, base_entry: ReportEntry) -> ReportEntry:
        from mosr.defenses.methods import create_method
        from mosr.defenses.settings import TrainingSettings
        from mosr.defenses.trainer import train
        from mosr.models import attach_adapter

        training = {"seed": self.config.seed, "system_prompt": self.config.system_prompt,
                    **self.config.training, **spec.training}
        # The key uses the options with every default filled in, so that a sweep value equal to another
        # entry's setting (τ=0.1 beside the default MOSR) reuses that entry's training and evaluation.
        options = create_method(spec.method, spec.options).options_dict()
        key = _settings_hash(self.config.model, spec.method, options, training, training_set.counts())
        settings = {"method": spec.method, "options": options, "training": training,
                    "evaluation": self._evaluation_key(), "utility": self.config.utility}
        folder = self.run_dir / "methods" / f"{spec.name.replace(' ', '_').replace('=', '-')}-{key}"
        stage = Stage(folder, settings)
        if not stage.done:
            finished = [other for other in sorted((self.run_dir / "methods").glob(f"*-{key}"))
                        if Stage(other, settings).done]
            if finished:
                logger.info("%s has the same settings as %s: reusing its results", spec.name, finished[0].name)
                folder, stage = finished[0], Stage(finished[0], settings)
        if not stage.done:
            self._drop_evaluation_of_lost_adapter(folder)
            logger.info("training %s", spec.name)
            loaded = self._load_base()
            result = train(loaded, training_set, method=spec.method, output_dir=folder / "train",
                           settings=TrainingSettings(**training), options=spec.options)
            loaded = self._load_base()
            attach_adapter(loaded, result.adapter_dir)
            logger.info("evaluating %s", spec.name)
            evaluate(loaded, self.evaluation, folder / "eval")
            kl = self._kl(loaded, base_entry)
            summary = read_json(folder / "train" / "summary.json") if (folder / "train" / "summary.json").is_file() else {}
            stage.finish({"training_time_s": summary.get("wall_time_s", result.wall_time_s), "kl_to_base": kl})
        else:
            rejudge(folder / "eval", self.evaluation)
        result = stage.result()
        return ReportEntry(name=spec.name, summary=read_json(folder / "eval" / "summary.json"), group=spec.group,
                           run_dir=str(folder / "eval"), training_time_s=result["training_time_s"],
                           kl_to_base=result["kl_to_base"], sweep=spec.sweep, sweep_value=spec.sweep_value)

    @staticmethod
    def _drop_evaluation_of_lost_adapter(folder: Path) -> None:
        """Remove a partial evaluation whose adapter weights are gone, since `train` will train them again."""
        from mosr.defenses.trainer import ADAPTER_WEIGHTS_FILE, SUMMARY_FILE

        train_dir, eval_dir = folder / "train", folder / "eval"
        if ((train_dir / SUMMARY_FILE).is_file() and not (train_dir / ADAPTER_WEIGHTS_FILE).is_file()
                and eval_dir.exists()):
            logger.warning("%s: adapter weights missing, so the method trains and evaluates again", folder.name)
            shutil.rmtree(eval_dir)

    def _kl(self, loaded, base_entry: ReportEntry) -> float | None:
        """KL to the base model along the base model's own responses to the harmless benchmark."""
        from mosr.utility import kl_to_base

        benchmark = self.config.utility.get("benchmark", "harmless")
        if benchmark not in base_entry.summary["benchmarks"]:
            logger.warning("no %r benchmark in the evaluation: KL to the base model is not measured", benchmark)
            return None
        records = load_samples(base_entry.run_dir, benchmark)[: int(self.config.utility.get("max_prompts", 64))]
        records = [record for record in records if not record["empty"]]
        if not records:
            return None
        return kl_to_base(loaded, [r["prompt"] for r in records], [r["response"] for r in records],
                          system_prompt=self.config.system_prompt)

    def run(self) -> dict:
        started = time.monotonic()
        # Invalid benchmarks and attacks surface before hours of work, not after them (`load_config`
        # has checked the method options already).
        benchmarks = [benchmark.name for benchmark in resolve_benchmarks(self.evaluation)]
        utility_benchmark = self.config.utility.get("benchmark", "harmless")
        if self.config.methods and utility_benchmark not in benchmarks:
            raise MosrError(f"utility.benchmark {utility_benchmark!r} is not among the evaluated benchmarks "
                            f"({', '.join(benchmarks)}): add it to evaluation.benchmarks or choose another")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / "config.json", dataclasses.asdict(self.config))
        base_entry = self.base_evaluation()
        self.base_analysis()
        entries = [base_entry]
        if self.config.methods:
            training_set = self.training_set()
            for spec in self.config.methods:
                entries.append(self.method(spec, training_set, base_entry))
        paths = write_report(entries, self.run_dir / "report", title=f"mosr study: {self.config.name}")
        logger.info("report written to %s in %.0f s", paths["markdown"], time.monotonic() - started)
        return paths


def run_study(config_path: str | Path, output: str | Path, *, data_dir: str | None = None) -> dict:
    return Study(load_config(config_path), output, data_dir=data_dir).run()
