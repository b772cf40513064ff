"""The judge interface: one verdict per (prompt, response) pair."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """A judge's decision on one response.

    `label` is the judged property (refusal for a refusal judge, harmful compliance for a harm
    judge), or None when the verdict is invalid: a model-based judge produced output that could
    not be parsed, or refused to judge. `kind` names the finer category, and `detail` records what
    the decision rests on (a matched phrase, a score, the raw output of a model judge).
    """

    label: bool | None
    kind: str
    detail: str | None = None


class Judge:
    """Base class for judges; subclasses set `name`, `version` and implement `judge`."""

    name: str = "judge"
    version: str = "0"
    # The property a True label means, used as the output field name by `mosr judge`.
    label_name: str = "label"

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        raise NotImplementedError

    def settings(self) -> dict:
        """Return the settings that change this judge's verdicts, for run manifests."""
        return {}

    def identity(self) -> dict:
        """Return name, version and settings, so that a run manifest records which judge produced its labels."""
        return {"name": self.name, "version": self.version, "settings": self.settings()}

    def __call__(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        return self.judge(prompts, responses)


def check_pairs(prompts: list[str], responses: list[str]) -> None:
    """Raise ValueError unless prompts and responses are equally long lists of strings."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; they must pair up")
    for index, (prompt, response) in enumerate(zip(prompts, responses)):
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise ValueError(
                f"pair {index}: prompt and response must be strings, "
                f"got {type(prompt).__name__} and {type(response).__name__}"
            )
