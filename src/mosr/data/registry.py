"""Named benchmark and training data sets, read from a data folder in the layout of the mosr data README.

Each data set is a list of `Sample`s. Evaluation sets and training sets are kept apart: a training
set is never offered as an evaluation benchmark, and AdvBench, whose prompts are part of
`harmful_train`, is flagged when it is evaluated.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from mosr.data.files import column_values, read_records
from mosr.errors import MosrError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "MOSR_DATA_DIR"

# Metrics a benchmark is scored with: which judge, and what a positive verdict means.
OVER_REFUSAL = "over_refusal"  # harmless prompts that look harmful; refusal is the error
REFUSAL = "refusal"  # harmful prompts; refusal is the wanted behaviour
ATTACK_SUCCESS = "attack_success"  # harmful requests; harmful compliance is an attack success
COMPLIANCE = "compliance"  # plainly harmless prompts; compliance is the wanted behaviour


@dataclass(frozen=True)
class Sample:
    """One prompt of a data set, with what is known about it."""

    id: str
    prompt: str
    benchmark: str
    category: str | None = None
    label: str | None = None  # "safe" or "unsafe" where the source gives one
    target: str | None = None  # an affirmative opening for the prefill attack, where the source gives one

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DataSpec:
    """Location of a named data set in the data folder, its metric, role and prompt column."""

    name: str
    path: str
    metric: str | None
    role: str  # "evaluation" or "training"
    prompt_column: str = "instruction"
    description: str = ""
    note: str | None = None


def _spec(*args, **kwargs) -> DataSpec:
    return DataSpec(*args, **kwargs)


DATASETS: dict[str, DataSpec] = {
    spec.name: spec
    for spec in [
        _spec("xstest-safe", "xstest/xstest_prompts.csv", OVER_REFUSAL, "evaluation", "prompt",
              "XSTest's 250 safe prompts that look unsafe, in 10 types"),
        _spec("xstest-unsafe", "xstest/xstest_prompts.csv", REFUSAL, "evaluation", "prompt",
              "XSTest's 200 unsafe contrast prompts"),
        _spec("oktest", "oktest/OKTest.csv", OVER_REFUSAL, "evaluation", "prompt",
              "OKTest's 300 harmless prompts with harmful-looking words"),
        _spec("harmbench", "refusal_direction/processed/harmbench_test.json", ATTACK_SUCCESS, "evaluation",
              description="HarmBench's 159 standard test behaviours"),
        _spec("jailbreakbench", "refusal_direction/processed/jailbreakbench.json", ATTACK_SUCCESS, "evaluation",
              description="JailbreakBench's 100 harmful behaviours"),
        _spec("strongreject", "refusal_direction/processed/strongreject.json", ATTACK_SUCCESS, "evaluation",
              description="StrongREJECT's 313 forbidden prompts"),
        _spec("advbench", "refusal_direction/processed/advbench.json", ATTACK_SUCCESS, "evaluation",
              description="AdvBench's 520 harmful behaviours",
              note="AdvBench prompts are part of harmful_train; do not evaluate a model trained on it with AdvBench"),
        _spec("harmless", "refusal_direction/splits/harmless_test.json", COMPLIANCE, "evaluation",
              description="6,266 harmless Alpaca instructions (test split)"),
        _spec("harmful_train", "refusal_direction/splits/harmful_train.json", None, "training",
              description="260 harmful instructions (AdvBench, MaliciousInstruct, TDC2023)"),
        _spec("harmful_val", "refusal_direction/splits/harmful_val.json", None, "training",
              description="39 harmful instructions (HarmBench validation)"),
        _spec("harmless_train", "refusal_direction/splits/harmless_train.json", None, "training",
              description="18,793 harmless Alpaca instructions (train split)"),
        _spec("harmless_val", "refusal_direction/splits/harmless_val.json", None, "training",
              description="6,264 harmless Alpaca instructions (validation split)"),
        _spec("oktest_heldout", "oktest/OKTest_heldout.csv", None, "training", "prompt",
              "OKTest's 50 held-out prompts, for training only"),
    ]
}

# "xstest" names both halves, which are always reported apart.
ALIASES = {"xstest": ["xstest-safe", "xstest-unsafe"]}


def default_data_dir() -> Path | None:
    """Return the data folder: $MOSR_DATA_DIR, else ../shared/data or shared/data from the working folder."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    for candidate in (Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    if path is None:
        raise MosrError(
            f"no data folder found: pass --data-dir or set {DATA_DIR_ENV} "
            "(or run `mosr download-data DIR` where you are online)"
        )
    if not path.is_dir():
        raise MosrError(f"data folder not found: {path}")
    return path


def expand_names(names: list[str], role: str = "evaluation") -> list[str]:
    """Resolve aliases and check that each name is a data set of the given role."""
    expanded: list[str] = []
    for name in names:
        for resolved in ALIASES.get(name, [name]):
            spec = DATASETS.get(resolved)
            if spec is None or spec.role != role:
                known = sorted([n for n, s in DATASETS.items() if s.role == role] + list(ALIASES) * (role == "evaluation"))
                raise MosrError(f"unknown {role} data set {name!r}: choose from {', '.join(known)}")
            if resolved not in expanded:
                expanded.append(resolved)
    return expanded


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows_to_samples(spec: DataSpec, rows: list[dict], source: Path) -> list[Sample]:
    prompts = column_values(rows, spec.prompt_column, source)
    samples = []
    for index, (row, prompt) in enumerate(zip(rows, prompts)):
        # OKTest prompts carry trailing newlines in the source file; they are not part of the request.
        prompt = prompt.strip()
        category = row.get("type") or row.get("category")
        label = row.get("label")
        samples.append(Sample(str(row.get("id") or index), prompt, spec.name, category, label))

    if spec.name == "xstest-safe":
        samples = [sample for sample in samples if sample.label == "safe"]
    elif spec.name == "xstest-unsafe":
        samples = [sample for sample in samples if sample.label == "unsafe"]
    return samples


def subsample(samples: list, limit: int | None, seed: int = 0) -> list:
    """Return a seeded random subset of `limit` items, in their original order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    if limit <= 0:
        raise MosrError(f"--limit must be a positive number of prompts, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(samples)), limit))
    return [samples[index] for index in chosen]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    role: str | None = None,
) -> list[Sample]:
    """Load a named data set (evaluation or training) from the data folder."""
    if limit is not None and limit <= 0:
        raise MosrError(f"--limit must be a positive number of prompts, got {limit}")
    spec = DATASETS.get(name)
    if spec is None or (role is not None and spec.role != role):
        expand_names([name], role or "evaluation")
        raise MosrError(f"unknown data set {name!r}")
    source = resolve_data_dir(data_dir) / spec.path
    if not source.is_file():
        raise MosrError(f"data file for {name!r} not found: {source}")
    samples = _rows_to_samples(spec, read_records(source), source)
    if not samples:
        raise MosrError(f"data set {name!r} is empty ({source})")
    if spec.note:
        logger.warning("%s: %s", name, spec.note)
    return subsample(samples, limit, seed)


def load_prompt_file(
    path: str | Path,
    prompt_column: str = "prompt",
    *,
    name: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Sample]:
    """Load a user CSV, JSONL or JSON file of prompts as a data set named after the file."""
    path = Path(path)
    rows = read_records(path)
    prompts = column_values(rows, prompt_column, path)
    name = name or path.stem
    samples = []
    for index, (row, prompt) in enumerate(zip(rows, prompts)):
        if not prompt.strip():
            raise MosrError(f"{path}, row {index + 1}: the prompt is empty")
        samples.append(Sample(str(row.get("id", index)), prompt.strip(), name, row.get("category"), row.get("label"),
                              row.get("target") or None))
    if limit is not None and limit <= 0:
        raise MosrError(f"--limit must be a positive number of prompts, got {limit}")
    return subsample(samples, limit, seed)


def data_file(name: str, data_dir: str | Path | None = None) -> Path:
    """Path of the file behind a named data set, for checksums in run manifests."""
    return resolve_data_dir(data_dir) / DATASETS[name].path
