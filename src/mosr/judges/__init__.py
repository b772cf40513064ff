"""Refusal and harm judges behind one interface: rule-based ones that run offline on a CPU, and model-based ones."""

from __future__ import annotations

import re
from pathlib import Path

from mosr.errors import MosrError
from mosr.judges.base import Judge, Verdict
from mosr.judges.harm import HarmJudge
from mosr.judges.refusal import RefusalJudge

JUDGE_KINDS = ("refusal", "harm")
# Names that select the rule-based judge of a kind, besides None.
RULE_JUDGE_NAMES = {
    "refusal": {"rule", "rules", RefusalJudge.name},
    "harm": {"rule", "rules", HarmJudge.name},
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

__all__ = ["JUDGE_KINDS", "HarmJudge", "Judge", "RefusalJudge", "Verdict", "get_judge"]


def get_judge(kind: str, name: str | None = None, **settings) -> Judge:
    """Return the judge for `kind` ("refusal" or "harm").

    With no name (or "rule"), this is the rule-based judge of that kind. A Hugging Face id or an
    existing local folder gives a model-based judge (`ModelJudge`); `settings` then go to its
    constructor, for example `family="llama_guard"` when the family cannot be detected from the name.
    """
    if kind not in JUDGE_KINDS:
        raise MosrError(f"unknown judge kind {kind!r}: use one of {', '.join(JUDGE_KINDS)}")
    if name is None or name in RULE_JUDGE_NAMES[kind]:
        if settings:
            raise MosrError(f"the rule-based {kind} judge takes no settings, got {', '.join(sorted(settings))}")
        return RefusalJudge() if kind == "refusal" else HarmJudge()

    if Path(name).expanduser().is_dir() or _HUB_ID.match(name):
        from mosr.judges.model_judge import MODEL_JUDGE_SETTINGS, ModelJudge

        unknown = sorted(set(settings) - set(MODEL_JUDGE_SETTINGS))
        if unknown:
            raise MosrError(
                f"unknown model judge settings {', '.join(unknown)}: use {', '.join(MODEL_JUDGE_SETTINGS)}"
            )
        return ModelJudge(name, kind=kind, **settings)
    raise MosrError(
        f"unknown judge {name!r}: use 'rule' for the rule-based {kind} judge, a Hugging Face id "
        f"(owner/name) or an existing local model folder"
    )
