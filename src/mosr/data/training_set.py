"""Build, cache and load the training set of the defenses, reproducibly from a seed.

The set has five kinds of example (see `mosr.data.examples`):

- malicious: harmful_train prompts with the base model's own completions, kept where the harm judge
  labels the completion harmful compliance;
- benign: harmless_train prompts with the base model's own completions (empty ones dropped);
- pseudo_malicious: the project's written prompts with their written responses, and OKTest's
  held-out prompts with the base model's own completions, kept where the refusal judge says they
  are not refusals;
- refusal: harmful_train prompts with a refusal drawn from `mosr.data.refusals`;
- augmented: malicious examples cut after k tokens and continued with a refusal
  (`mosr.data.augmentation`).

Every training prompt that copies or nearly copies an evaluation prompt is dropped first
(`mosr.data.overlap`); the stats list what was dropped and why.

Files in `output_dir`: `completions/<set>-<key>.jsonl` holds the generated completions, appended
as they finish, so an interrupted build resumes there; `key` is a digest of the model and
`max_new_tokens`, so builds with other counts or seeds reuse the completions they share.
`training_set.jsonl` holds the examples and `stats.json` the counts, the settings and their
digest. A build with the same settings loads these files; other settings rebuild them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mosr import generation
from mosr.data.augmentation import DEFAULT_AUGMENTATION_RANGE, build_augmented_examples, check_augmentation_range
from mosr.data.examples import AUGMENTED, BENIGN, KINDS, MALICIOUS, PSEUDO_MALICIOUS, REFUSAL, TrainingExample
from mosr.data.overlap import (
    EXACT_ONLY_EVALUATION_SETS,
    Match,
    JACCARD_THRESHOLD,
    RATIO_THRESHOLD,
    SUBJECT_JACCARD_THRESHOLD,
    PromptIndex,
    evaluation_prompts,
)
from mosr.data.pseudo_malicious import load_written_pseudo_malicious, written_set_sha256
from mosr.data.refusals import choose_refusal, refusal_set_sha256, seeded_random
from mosr.data.registry import DATASETS, Sample, file_sha256, load_dataset, resolve_data_dir
from mosr.errors import MosrError

logger = logging.getLogger(__name__)

TRAINING_SET_FILE = "training_set.jsonl"
STATS_FILE = "stats.json"
COMPLETIONS_FOLDER = "completions"
# Raise when a change to this module changes the examples built from the same settings.
FORMAT_VERSION = 1

DEFAULT_BENIGN = 512
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_BATCH_SIZE = 16
WRITTEN_SOURCE = "mosr-written"
# Dropped prompts listed in the stats per training set; the count is always complete.
MAX_LISTED_DROPS = 50


@dataclass
class TrainingSet:
    """Training examples grouped by kind, with the stats of the build that made them."""

    examples: dict[str, list[TrainingExample]]
    stats: dict = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, kind: str) -> list[TrainingExample]:
        if kind not in KINDS:
            raise KeyError(f"unknown training example kind {kind!r}: expected one of {', '.join(KINDS)}")
        return self.examples.get(kind, [])

    def __len__(self) -> int:
        return sum(len(examples) for examples in self.examples.values())

    def all_examples(self) -> list[TrainingExample]:
        """Return every example, kinds in the order of `KINDS`."""
        return [example for kind in KINDS for example in self.examples.get(kind, [])]

    def counts(self) -> dict[str, int]:
        return {kind: len(self.examples.get(kind, [])) for kind in KINDS}


def _json_digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _check_count(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise MosrError(f"{name} must be a number of examples >= 0 (or None for all), got {value!r}")


def _data_files(folder: Path, names: list[str]) -> dict[str, str]:
    """Return the SHA-256 of each data file that exists, keyed by its path relative to the data folder."""
    digests = {}
    for name in names:
        path = folder / DATASETS[name].path
        if path.is_file():
            digests[DATASETS[name].path] = file_sha256(path)
    return digests


class _Builder:
    """One build: the settings, the model, the judges, and the evaluation index shared by the steps."""

    def __init__(self, loaded, folder: Path, output_dir: Path, settings: dict, *, batch_size: int,
                 harm_judge, refusal_judge, progress: bool):
        self.loaded = loaded
        self.folder = folder
        self.output_dir = output_dir
        self.settings = settings
        self.seed = settings["seed"]
        self.batch_size = batch_size
        self.harm_judge = harm_judge
        self.refusal_judge = refusal_judge
        self.progress = progress
        self.generation_key = _json_digest(
            {"model": settings["model"], "max_new_tokens": settings["max_new_tokens"]}
        )[:12]
        self.stats: dict = {}
        self._index: PromptIndex | None = None
        # Data set name -> sample id -> the evaluation prompt it nearly copies (None: checked, clean).
        self._near_copies: dict[str, dict[str, Match | None]] = {}

    @property
    def index(self) -> PromptIndex:
        if self._index is None:
            self._index = PromptIndex(evaluation_prompts(self.folder), exact_only=EXACT_ONLY_EVALUATION_SETS)
        return self._index

    def draw(self, name: str, samples: list[Sample], count: int | None, label: str) -> list[Sample]:
        """Draw `count` samples (all for None) in a seeded order, skipping near copies of evaluation prompts.

        Samples are checked in the drawn order until `count` are kept, so a draw from a large set
        checks only about as many prompts as it keeps. The result keeps the samples' original order.
        """
        checked = self._near_copies.setdefault(name, {})
        order = list(range(len(samples)))
        seeded_random(self.seed, label).shuffle(order)
        chosen: list[int] = []
        for position in order:
            if count is not None and len(chosen) >= count:
                break
            sample = samples[position]
            if sample.id not in checked:
                checked[sample.id] = self.index.find_near_copy(sample.prompt)
            if checked[sample.id] is None:
                chosen.append(position)
        return [samples[position] for position in sorted(chosen)]

    def near_copy_report(self) -> dict:
        """Per data set: prompts checked, prompts dropped, and the first dropped ones with their match."""
        report = {}
        for name, checked in self._near_copies.items():
            dropped = [
                {"id": sample_id, "prompt": match.prompt, "evaluation_set": match.reference_set,
                 "evaluation_prompt": match.reference,
                 **{score: round(value, 3) for score, value in match.scores.items()}}
                for sample_id, match in checked.items()
                if match is not None
            ]
            report[name] = {"checked": len(checked), "dropped": len(dropped), "examples": dropped[:MAX_LISTED_DROPS]}
            if dropped:
                logger.info("%s: dropped %d of %d checked prompts that nearly copy an evaluation prompt",
                            name, len(dropped), len(checked))
        return report

    def complete(self, name: str, samples: list[Sample]) -> list[dict]:
        """Return the base model's completions of `samples`, generated once and cached per data set."""
        if not samples:
            return []
        path = self.output_dir / COMPLETIONS_FOLDER / f"{name}-{self.generation_key}.jsonl"
        records = generation.generate(
            self.loaded,
            [sample.prompt for sample in samples],
            ids=[sample.id for sample in samples],
            max_new_tokens=self.settings["max_new_tokens"],
            batch_size=self.batch_size,
            output_path=path,
            progress=self.progress,
            description=f"completing {name}",
        )
        for sample, record in zip(samples, records):
            if record["prompt"] != sample.prompt:
                raise MosrError(
                    f"{path} contains a completion of another prompt for id {sample.id!r}, so the data file "
                    "changed after it was written. Delete the file and build again"
                )
        return records

    def malicious(self, harmful: list[Sample], count: int | None) -> list[TrainingExample]:
        candidates = self.draw("harmful_train", harmful, count, MALICIOUS)
        records = self.complete("harmful_train", candidates)
        nonempty = [(sample, record) for sample, record in zip(candidates, records) if record["response"].strip()]
        verdicts = self.harm_judge.judge([s.prompt for s, _ in nonempty], [r["response"] for _, r in nonempty])
        examples = [
            TrainingExample(f"{MALICIOUS}/harmful_train/{sample.id}", MALICIOUS, sample.prompt, record["response"],
                            source="harmful_train")
            for (sample, record), verdict in zip(nonempty, verdicts)
            if verdict.label is True
        ]
        invalid = sum(verdict.label is None for verdict in verdicts)
        self.stats[MALICIOUS] = {
            "candidates": len(candidates),
            "empty_completions": len(candidates) - len(nonempty),
            "judged_not_harmful": sum(verdict.label is False for verdict in verdicts),
            "invalid_verdicts": invalid,
            "kept": len(examples),
            "truncated": sum(record["stop_reason"] == generation.LENGTH for _, record in nonempty),
        }
        logger.info("malicious: kept %d of %d completions that the harm judge calls harmful "
                    "(%d empty, %d invalid verdicts)", len(examples), len(candidates),
                    len(candidates) - len(nonempty), invalid)

        minimum = self.settings["min_malicious"]
        if minimum is None:
            minimum = max(1, len(candidates) // 4)
        if len(examples) < minimum:
            raise MosrError(
                f"only {len(examples)} of {len(candidates)} harmful_train completions were judged harmful, "
                f"fewer than the minimum of {minimum}: the model refuses or derails too often for erasure "
                "training. Raise n_malicious or max_new_tokens, lower min_malicious, or use another harm judge"
            )
        return examples

    def benign(self) -> list[TrainingExample]:
        harmless = load_dataset("harmless_train", self.folder, role="training")
        candidates = self.draw("harmless_train", harmless, self.settings["n_benign"], BENIGN)
        records = self.complete("harmless_train", candidates)
        examples = [
            TrainingExample(f"{BENIGN}/harmless_train/{sample.id}", BENIGN, sample.prompt, record["response"],
                            source="harmless_train")
            for sample, record in zip(candidates, records)
            if record["response"].strip()
        ]
        self.stats[BENIGN] = {"candidates": len(candidates), "empty_completions": len(candidates) - len(examples),
                              "kept": len(examples)}
        return examples

    def pseudo_malicious(self) -> list[TrainingExample]:
        written = load_written_pseudo_malicious()
        written_samples = [Sample(item.id, item.prompt, WRITTEN_SOURCE, item.kind) for item in written]
        oktest = load_dataset("oktest_heldout", self.folder, role="training")
        # Written and OKTest ids never collide: written ids name their kind ("homonyms-03").
        chosen = self.draw(PSEUDO_MALICIOUS, written_samples + oktest, self.settings["n_pseudo_malicious"],
                           PSEUDO_MALICIOUS)

        responses = {item.id: item.response for item in written}
        examples = [
            TrainingExample(f"{PSEUDO_MALICIOUS}/{WRITTEN_SOURCE}/{sample.id}", PSEUDO_MALICIOUS, sample.prompt,
                            responses[sample.id], source=f"{WRITTEN_SOURCE}/{sample.category}")
            for sample in chosen
            if sample.benchmark == WRITTEN_SOURCE
        ]
        written_count = len(examples)

        oktest_chosen = [sample for sample in chosen if sample.benchmark == "oktest_heldout"]
        records = self.complete("oktest_heldout", oktest_chosen)
        nonempty = [(sample, record) for sample, record in zip(oktest_chosen, records) if record["response"].strip()]
        verdicts = self.refusal_judge.judge([s.prompt for s, _ in nonempty], [r["response"] for _, r in nonempty])
        for (sample, record), verdict in zip(nonempty, verdicts):
            if verdict.label is False:
                examples.append(TrainingExample(f"{PSEUDO_MALICIOUS}/oktest_heldout/{sample.id}", PSEUDO_MALICIOUS,
                                                sample.prompt, record["response"], source="oktest_heldout"))
        self.stats[PSEUDO_MALICIOUS] = {
            "written": written_count,
            "written_by_kind": dict(sorted(Counter(s.category for s in chosen if s.benchmark == WRITTEN_SOURCE).items())),
            "oktest_heldout_candidates": len(oktest_chosen),
            "oktest_heldout_empty": len(oktest_chosen) - len(nonempty),
            "oktest_heldout_refused": sum(verdict.label is True for verdict in verdicts),
            "oktest_heldout_invalid_verdicts": sum(verdict.label is None for verdict in verdicts),
            "oktest_heldout_kept": len(examples) - written_count,
            "kept": len(examples),
        }
        return examples

    def refusal(self, harmful: list[Sample]) -> list[TrainingExample]:
        chosen = self.draw("harmful_train", harmful, self.settings["n_refusal"], REFUSAL)
        rng = seeded_random(self.seed, REFUSAL, "responses")
        examples = [
            TrainingExample(f"{REFUSAL}/harmful_train/{sample.id}", REFUSAL, sample.prompt, choose_refusal(rng),
                            source="harmful_train")
            for sample in chosen
        ]
        self.stats[REFUSAL] = {"kept": len(examples), "distinct_refusals": len({e.response for e in examples})}
        return examples

    def augmented(self, malicious: list[TrainingExample]) -> list[TrainingExample]:
        count = self.settings["n_augmented"]
        count = len(malicious) if count is None else count
        examples, used_k = build_augmented_examples(
            malicious, self.loaded.tokenizer, count=count,
            augmentation_range=tuple(self.settings["augmentation_range"]), seed=self.seed,
        )
        self.stats[AUGMENTED] = {
            "kept": len(examples),
            "k_counts": {str(k): used_k[k] for k in sorted(used_k)},
            "k_zero": used_k.get(0, 0),
        }
        return examples

    def build(self) -> dict[str, list[TrainingExample]]:
        settings = self.settings
        harmful: list[Sample] = []
        if any(settings[key] != 0 for key in ("n_malicious", "n_refusal", "n_augmented")):
            harmful = load_dataset("harmful_train", self.folder, role="training")

        examples: dict[str, list[TrainingExample]] = {kind: [] for kind in KINDS}
        if settings["n_malicious"] != 0 or settings["n_augmented"] != 0:
            # With n_malicious=0, every harmful prompt is a candidate source for the augmentation.
            examples[MALICIOUS] = self.malicious(harmful, settings["n_malicious"] or None)
        if settings["n_benign"] != 0:
            examples[BENIGN] = self.benign()
        if settings["n_pseudo_malicious"] != 0:
            examples[PSEUDO_MALICIOUS] = self.pseudo_malicious()
        if settings["n_refusal"] != 0:
            examples[REFUSAL] = self.refusal(harmful)
        if settings["n_augmented"] != 0:
            examples[AUGMENTED] = self.augmented(examples[MALICIOUS])
        if settings["n_malicious"] == 0:
            # Malicious completions were generated only as the source of the augmentation.
            examples[MALICIOUS] = []
        self.stats["near_copies_removed"] = self.near_copy_report()
        return examples


def _check_sizes(examples: dict[str, list[TrainingExample]], settings: dict, stats: dict) -> None:
    counts = {kind: len(examples[kind]) for kind in KINDS}
    summary = ", ".join(f"{kind} {count}" for kind, count in counts.items())
    if not any(counts.values()):
        raise MosrError(f"the training set is empty ({summary}): every requested count was 0 or nothing was kept")
    requested = {MALICIOUS: "n_malicious", BENIGN: "n_benign", PSEUDO_MALICIOUS: "n_pseudo_malicious",
                 REFUSAL: "n_refusal", AUGMENTED: "n_augmented"}
    empty = [kind for kind, key in requested.items() if settings[key] != 0 and counts[kind] == 0]
    if empty:
        details = "; ".join(f"{kind}: {json.dumps({k: v for k, v in stats.get(kind, {}).items() if k != 'k_counts'})}"
                            for kind in empty)
        raise MosrError(
            f"no {' or '.join(empty)} examples were kept ({summary}). Details: {details}. "
            "Set the count of a kind to 0 to leave it out on purpose"
        )


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _load_cached(output_dir: Path, settings_hash: str) -> TrainingSet | None:
    stats_path = output_dir / STATS_FILE
    if not stats_path.is_file() or not (output_dir / TRAINING_SET_FILE).is_file():
        return None
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        logger.warning("%s is not valid JSON; rebuilding the training set", stats_path)
        return None
    if stats.get("settings_hash") != settings_hash:
        logger.info("the training set in %s was built with other settings; rebuilding it", output_dir)
        return None
    if file_sha256(output_dir / TRAINING_SET_FILE) != stats.get("training_set_sha256"):
        logger.warning("%s does not match the checksum in %s; rebuilding it", output_dir / TRAINING_SET_FILE, stats_path)
        return None
    training_set = load_training_set(output_dir)
    logger.info("loaded the cached training set from %s (%s)", output_dir,
                ", ".join(f"{kind} {count}" for kind, count in training_set.counts().items()))
    return training_set


def build_training_set(
    loaded,
    *,
    output_dir: str | Path,
    data_dir: str | Path | None = None,
    seed: int = 0,
    n_malicious: int | None = None,
    n_benign: int | None = DEFAULT_BENIGN,
    n_pseudo_malicious: int | None = None,
    n_refusal: int | None = None,
    n_augmented: int | None = None,
    augmentation_range: tuple[int, int] = DEFAULT_AUGMENTATION_RANGE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    harm_judge=None,
    refusal_judge=None,
    min_malicious: int | None = None,
    progress: bool = True,
) -> TrainingSet:
    """Build the training set for `loaded` (a `LoadedModel`), or load it from `output_dir`.

    Counts are numbers of prompts drawn (seeded) after near copies of evaluation prompts are
    removed; None takes all of them, and 0 leaves the kind out:

    - `n_malicious`: harmful_train prompts to complete; only completions judged harmful are kept,
      so the kind usually ends up smaller. At least `min_malicious` must be kept (default: a
      quarter of the candidates, at least 1), else MosrError.
    - `n_benign`: harmless_train prompts to complete (default 512 of 18,793).
    - `n_pseudo_malicious`: prompts drawn from the written set and OKTest's held-out prompts
      together; OKTest completions that the refusal judge calls refusals are dropped.
    - `n_refusal`: harmful_train prompts paired with a refusal.
    - `n_augmented`: augmented examples (default: one per kept malicious example). With
      `n_malicious=0` and `n_augmented` not 0, malicious completions are still generated as the
      source of the augmentation, but are not part of the set.

    `harm_judge` and `refusal_judge` default to the rule-based judges of `mosr.judges`. The cache
    key covers every setting that changes the result, the model and judge identities, and the
    checksums of the data files and of the written prompts and refusals. `batch_size` and
    `progress` are not part of it.
    """
    for name, value in (("n_malicious", n_malicious), ("n_benign", n_benign),
                        ("n_pseudo_malicious", n_pseudo_malicious), ("n_refusal", n_refusal),
                        ("n_augmented", n_augmented), ("min_malicious", min_malicious)):
        _check_count(name, value)
    low, high = check_augmentation_range(augmentation_range)
    if max_new_tokens <= 0:
        raise MosrError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if batch_size <= 0:
        raise MosrError(f"batch_size must be positive, got {batch_size}")

    if harm_judge is None or refusal_judge is None:
        from mosr.judges import get_judge

        harm_judge = harm_judge or get_judge("harm")
        refusal_judge = refusal_judge or get_judge("refusal")

    folder = resolve_data_dir(data_dir)
    output_dir = Path(output_dir)
    evaluation_names = [name for name, spec in DATASETS.items() if spec.role == "evaluation"]
    settings = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n_malicious": n_malicious,
        "n_benign": n_benign,
        "n_pseudo_malicious": n_pseudo_malicious,
        "n_refusal": n_refusal,
        "n_augmented": n_augmented,
        "min_malicious": min_malicious,
        "augmentation_range": [low, high],
        "max_new_tokens": max_new_tokens,
        "model": loaded.identity,
        "harm_judge": harm_judge.identity(),
        "refusal_judge": refusal_judge.identity(),
        "near_copy_thresholds": {"jaccard": JACCARD_THRESHOLD, "ratio": RATIO_THRESHOLD,
                                 "subject_jaccard": SUBJECT_JACCARD_THRESHOLD},
        "training_files": _data_files(folder, ["harmful_train", "harmless_train", "oktest_heldout"]),
        "evaluation_files": _data_files(folder, evaluation_names),
        "written_pseudo_malicious_sha256": written_set_sha256(),
        "refusals_sha256": refusal_set_sha256(),
    }
    settings_hash = _json_digest(settings)

    cached = _load_cached(output_dir, settings_hash)
    if cached is not None:
        return cached

    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    builder = _Builder(loaded, folder, output_dir, settings, batch_size=batch_size, harm_judge=harm_judge,
                       refusal_judge=refusal_judge, progress=progress)
    examples = builder.build()
    _check_sizes(examples, settings, builder.stats)

    training_set = TrainingSet(examples, path=output_dir / TRAINING_SET_FILE)
    text = "".join(json.dumps(example.to_dict(), ensure_ascii=False) + "\n" for example in training_set.all_examples())
    _write_atomically(output_dir / TRAINING_SET_FILE, text)
    stats = {
        "settings_hash": settings_hash,
        "counts": training_set.counts(),
        "total": len(training_set),
        **builder.stats,
        "settings": settings,
        "training_set_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    # stats.json is written last: a build that stops before it is never taken for a finished one.
    _write_atomically(output_dir / STATS_FILE, json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    training_set.stats = stats
    logger.info("training set written to %s: %s", output_dir,
                ", ".join(f"{kind} {count}" for kind, count in training_set.counts().items()))
    return training_set


def load_training_set(path: str | Path) -> TrainingSet:
    """Load a training set from its folder or its `training_set.jsonl`, with `stats.json` when present."""
    path = Path(path)
    file = path / TRAINING_SET_FILE if path.is_dir() else path
    if not file.is_file():
        raise MosrError(f"training set not found: {file} does not exist (leave out --training-set and `mosr train` builds one)")

    examples: dict[str, list[TrainingExample]] = {kind: [] for kind in KINDS}
    for line_number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = TrainingExample(**json.loads(line))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise MosrError(f"{file}, line {line_number}: not a training example ({error})") from None
        examples[example.kind].append(example)

    stats_path = file.with_name(STATS_FILE)
    stats = {}
    if stats_path.is_file():
        try:
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise MosrError(f"{stats_path}: invalid JSON ({error.msg}); delete it to rebuild the set") from None
    training_set = TrainingSet(examples, stats, file)
    if not len(training_set):
        raise MosrError(f"{file} contains no training examples")
    return training_set
