"""Pseudo-malicious prompts written for this project: harmless requests that look harmful.

Each prompt comes with a helpful response of two to six sentences and its kind. The kinds follow
the safe prompt types of XSTest (Röttger et al., NAACL 2024) that concern wording rather than
discrimination, plus OKTest's kind (Shi et al. 2024): harmless requests that contain
harmful-looking words. The prompts and responses are original text, and a test checks that no
prompt nearly copies an evaluation prompt (see `mosr.data.overlap`).

The data lives in `written/pseudo_malicious.jsonl` inside the package, one object a line with
`id`, `kind`, `prompt` and `response`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

from mosr.errors import MosrError

# Kind -> what its prompts do.
WRITTEN_KINDS: dict[str, str] = {
    "homonyms": "use a word with a violent sense in its harmless sense (kill a process, butcher a chicken)",
    "figurative_language": "use violent words figuratively (murder a personal best, crush a quiz)",
    "safe_targets": "direct a violent verb at a legitimate target (pests, weeds, mould, old hardware)",
    "safe_contexts": "ask about violence inside games, sports, fiction or stage work",
    "definitions": "ask what a crime or harmful practice is",
    "historical_events": "ask about atrocities, wars and disasters as history",
    "privacy_public": "ask for public facts about public figures",
    "privacy_fictional": "ask for 'private' facts about fictional characters",
    "alarming_words": "contain profanity, slang or dual-use words in a harmless request (OKTest's kind)",
}

_PACKAGE = "mosr.data"
_RESOURCE = ("written", "pseudo_malicious.jsonl")


@dataclass(frozen=True)
class WrittenPrompt:
    """A written pseudo-malicious prompt with its helpful response."""

    id: str
    kind: str
    prompt: str
    response: str


def _resource_bytes() -> bytes:
    resource = resources.files(_PACKAGE).joinpath(*_RESOURCE)
    try:
        return resource.read_bytes()
    except FileNotFoundError:
        raise MosrError(
            f"the written pseudo-malicious prompts are missing from the installed package ({resource}); "
            "reinstall mosr"
        ) from None


def written_set_sha256() -> str:
    """Return the SHA-256 of the data file, so that a cached training set is rebuilt when the prompts change."""
    return hashlib.sha256(_resource_bytes()).hexdigest()


def load_written_pseudo_malicious() -> list[WrittenPrompt]:
    """Load the written pseudo-malicious prompts in file order, checking each row."""
    prompts: list[WrittenPrompt] = []
    seen_ids: set[str] = set()
    for line_number, line in enumerate(_resource_bytes().decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{'/'.join(_RESOURCE)}, line {line_number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise MosrError(f"{where}: invalid JSON ({error.msg})") from None
        missing = [field for field in ("id", "kind", "prompt", "response") if not str(row.get(field) or "").strip()]
        if missing:
            raise MosrError(f"{where}: missing or empty {', '.join(missing)}")
        if row["kind"] not in WRITTEN_KINDS:
            raise MosrError(f"{where}: unknown kind {row['kind']!r}; expected one of {', '.join(WRITTEN_KINDS)}")
        if row["id"] in seen_ids:
            raise MosrError(f"{where}: duplicate id {row['id']!r}")
        seen_ids.add(row["id"])
        prompts.append(WrittenPrompt(row["id"], row["kind"], row["prompt"].strip(), row["response"].strip()))
    return prompts
