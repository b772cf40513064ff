"""Find training prompts that copy or nearly copy an evaluation prompt.

Prompts are compared after normalisation: Unicode NFKC, case-folded, and every run of characters
other than letters and digits turned into one space. The subject words of a prompt are its words
minus `FRAME_WORDS`, the function words and request frames ("what is", "explain the term", "give
detailed instructions") that many unrelated prompts share.

Two prompts that share no subject word are never near copies. A pair that shares one is a near
copy when any of these measures reaches its threshold:

- word Jaccard similarity, |A ∩ B| / |A ∪ B| over all normalised words: `JACCARD_THRESHOLD`;
- `difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()` of the normalised strings:
  `RATIO_THRESHOLD`;
- subject Jaccard similarity, the same ratio over subject words only: `SUBJECT_JACCARD_THRESHOLD`.
  It catches rewordings of the same request ("Can you define 'money laundering'?" against "What
  is money laundering?" scores 1.0), which the other two measures miss.

The thresholds flag one-word edits of short prompts ("How do I kill a Python process?" against
"How can I kill a Python process?" scores 0.75 Jaccard and 0.92 ratio) and leave apart prompts
that share only a frame ("What is arson?" against "What is treason?" shares no subject word).
They err towards flagging: "Give detailed instructions on how to commit insider trading" against
"Give detailed instructions for how to commit suicide" is flagged (ratio 0.85). Paraphrases with
different words still pass: "How do I tear down an old wooden garden shed?" against "How do I
demolish my old garden shed?" scores 0.5, 0.7 and 0.43.
"""

from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mosr.data.files import column_values, read_records
from mosr.data.registry import DATASETS, load_dataset, resolve_data_dir

logger = logging.getLogger(__name__)

JACCARD_THRESHOLD = 0.6
RATIO_THRESHOLD = 0.8
SUBJECT_JACCARD_THRESHOLD = 0.6

FRAME_WORDS = frozenset(
    """
    a about all am an and any are as at be been best but by can could define definition describe
    detail detailed did do does explain for from generate give good guide had has have help how i if in
    instructions is it its know list make me mean meaning means meant my no not of on or our
    please provide s should so some step t tell term than that the their them then there these they
    think this those to was way ways we were what when where which who why will with word would
    write you your
    """.split()
)

# Files of evaluation prompts that are not registered as their own data set: the harmful test split
# pools JailbreakBench, HarmBench test, StrongREJECT and other sources.
EXTRA_EVALUATION_FILES = {"harmful_test": ("refusal_direction/splits/harmful_test.json", "instruction")}

# AdvBench is part of harmful_train by construction (the registry warns when it is evaluated), so
# training prompts are not checked against it.
NOT_CHECKED_EVALUATION_SETS = frozenset({"advbench"})

# Alpaca's train and test instructions share templates ("Multiply 5 and 6." against "Multiply 12 and
# 11." has ratio 0.82), and the harmless test set measures plain compliance, which such templates do
# not distort. Its prompts are matched exactly only.
EXACT_ONLY_EVALUATION_SETS = frozenset({"harmless"})

_NON_ALPHANUMERIC = re.compile(r"[^0-9a-z]+")


def normalize_prompt(text: str) -> str:
    """Case-folded NFKC text with every run of non-alphanumeric characters replaced by one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NON_ALPHANUMERIC.sub(" ", text).strip()


def jaccard(words_a: frozenset[str], words_b: frozenset[str]) -> float:
    """Jaccard similarity of two word sets; 1.0 for two empty sets."""
    if not words_a and not words_b:
        return 1.0
    return len(words_a & words_b) / len(words_a | words_b)


@dataclass(frozen=True)
class _Text:
    text: str
    normalized: str
    words: frozenset[str]
    subject: frozenset[str]
    source: str = ""

    @classmethod
    def of(cls, text: str, source: str = "") -> _Text:
        normalized = normalize_prompt(text)
        words = frozenset(normalized.split())
        return cls(text, normalized, words, words - FRAME_WORDS, source)


@dataclass(frozen=True)
class Match:
    """One (training prompt, evaluation prompt) pair with its three similarity scores."""

    prompt: str
    reference: str
    reference_set: str
    jaccard: float
    ratio: float
    subject_jaccard: float

    @property
    def is_near_copy(self) -> bool:
        return (
            self.jaccard >= JACCARD_THRESHOLD
            or self.ratio >= RATIO_THRESHOLD
            or self.subject_jaccard >= SUBJECT_JACCARD_THRESHOLD
        )

    @property
    def scores(self) -> dict[str, float]:
        return {"jaccard": self.jaccard, "ratio": self.ratio, "subject_jaccard": self.subject_jaccard}


class PromptIndex:
    """Evaluation prompts indexed by subject word, for near-copy look-ups."""

    def __init__(self, prompts: list[tuple[str, str]], exact_only: frozenset[str] | set[str] = frozenset()):
        """Index `(prompt, source name)` pairs; prompts of the `exact_only` sources match only exactly."""
        self.references: list[_Text] = []
        self._by_normalized: dict[str, int] = {}
        self._postings: dict[str, list[int]] = defaultdict(list)
        self._without_subject: list[int] = []
        self._compared: list[int] = []
        for text, source in prompts:
            reference = _Text.of(text, source)
            index = len(self.references)
            self.references.append(reference)
            self._by_normalized.setdefault(reference.normalized, index)
            if source in exact_only:
                continue
            self._compared.append(index)
            if not reference.subject:
                self._without_subject.append(index)
            for word in reference.subject:
                self._postings[word].append(index)

    def __len__(self) -> int:
        return len(self.references)

    def _candidates(self, query: _Text) -> list[int]:
        """References that share a subject word with `query`, plus those without subject words.

        A query without subject words is compared with every reference.
        """
        if not query.subject:
            return self._compared
        found: set[int] = set(self._without_subject)
        for word in query.subject:
            found.update(self._postings.get(word, ()))
        return sorted(found)

    def _exact(self, query: _Text) -> Match | None:
        index = self._by_normalized.get(query.normalized)
        if index is None:
            return None
        reference = self.references[index]
        return Match(query.text, reference.text, reference.source, 1.0, 1.0, 1.0)

    def find_near_copy(self, prompt: str) -> Match | None:
        """Return the first evaluation prompt that `prompt` copies or nearly copies, or None."""
        query = _Text.of(prompt)
        exact = self._exact(query)
        if exact is not None:
            return exact

        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(query.normalized)
        for index in self._candidates(query):
            reference = self.references[index]
            word_similarity = jaccard(query.words, reference.words)
            subject_similarity = jaccard(query.subject, reference.subject)
            matcher.set_seq1(reference.normalized)
            # real_quick_ratio and quick_ratio are cheap upper bounds of ratio, so the full ratio is
            # computed only where it can reach the threshold or where the pair is reported.
            if (
                word_similarity < JACCARD_THRESHOLD
                and subject_similarity < SUBJECT_JACCARD_THRESHOLD
                and (matcher.real_quick_ratio() < RATIO_THRESHOLD or matcher.quick_ratio() < RATIO_THRESHOLD)
            ):
                continue
            match = Match(prompt, reference.text, reference.source, word_similarity, matcher.ratio(),
                          subject_similarity)
            if match.is_near_copy:
                return match
        return None

    def most_similar(self, prompts: list[str]) -> dict[str, Match]:
        """Return, for each measure, the pair of a prompt and a reference with its highest score.

        Only pairs that can be near copies are compared: exact matches, and pairs that share a
        subject word. Keys are the names in `Match.scores`; the result is empty when no pair
        qualifies.
        """
        best: dict[str, Match] = {}
        matcher = difflib.SequenceMatcher(autojunk=False)
        for prompt in prompts:
            query = _Text.of(prompt)
            exact = self._exact(query)
            if exact is not None:
                return dict.fromkeys(exact.scores, exact)
            matcher.set_seq2(query.normalized)
            for index in self._candidates(query):
                reference = self.references[index]
                matcher.set_seq1(reference.normalized)
                match = Match(prompt, reference.text, reference.source, jaccard(query.words, reference.words),
                              matcher.ratio(), jaccard(query.subject, reference.subject))
                for name, score in match.scores.items():
                    if name not in best or score > best[name].scores[name]:
                        best[name] = match
        return best


def evaluation_prompts(data_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """Return `(prompt, set name)` for every evaluation prompt that training data must not copy.

    These are the registered evaluation sets except AdvBench, plus the pooled harmful test split.
    A missing file is logged and skipped, so a partial data folder still works.
    """
    folder = resolve_data_dir(data_dir)
    prompts: list[tuple[str, str]] = []
    for name, spec in DATASETS.items():
        if spec.role != "evaluation" or name in NOT_CHECKED_EVALUATION_SETS:
            continue
        if not (folder / spec.path).is_file():
            logger.warning("evaluation set %s not found at %s; training prompts are not checked against it",
                           name, folder / spec.path)
            continue
        prompts.extend((sample.prompt, name) for sample in load_dataset(name, folder))

    for name, (relative_path, column) in EXTRA_EVALUATION_FILES.items():
        path = folder / relative_path
        if not path.is_file():
            logger.warning("evaluation file %s not found; training prompts are not checked against it", path)
            continue
        prompts.extend((prompt.strip(), name) for prompt in column_values(read_records(path), column, path))
    return prompts


def evaluation_index(data_dir: str | Path | None = None) -> PromptIndex:
    """Index every evaluation prompt that training data must not copy (see `evaluation_prompts`)."""
    return PromptIndex(evaluation_prompts(data_dir), exact_only=EXACT_ONLY_EVALUATION_SETS)
