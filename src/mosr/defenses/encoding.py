"""Turn training examples into token ids with loss targets, and draw batches from them reproducibly.

Loss targets are the tokens of `response` plus the end-of-turn token that the chat template puts
after the assistant turn, when there is one. The end-of-turn token is included so that
cross-entropy teaches the model to stop after a refusal, and every other loss uses the same
positions for simplicity. Tokens of `response_prefix` are context and never targets.

Targets come from token positions (`encode_messages` content spans), never from padding: for
SmolLM2 the pad token is the end-of-turn token, so a "not padding" mask would drop it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch

from mosr.data.examples import TrainingExample
from mosr.errors import MosrError
from mosr.models import build_messages, encode_messages

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one rendered conversation and the span of its loss targets."""

    example: TrainingExample
    input_ids: tuple[int, ...]
    target_start: int
    """First target position: the first token of `response`."""
    target_end: int
    """One past the last target position; equal to `target_start` when truncation removed every target."""
    truncated: bool


def _assistant_content_ids(tokenizer, head: list[dict], text: str) -> list[int]:
    """Token ids of `text` as an assistant message after `head`, through the one rendering path."""
    ids, spans = encode_messages(
        tokenizer, [*head, {"role": "assistant", "content": text}], add_generation_prompt=False, return_content_spans=True
    )
    start, end = spans[-1]
    return ids[start:end]


def encode_example(
    tokenizer,
    example: TrainingExample,
    *,
    end_of_turn_ids: set[int],
    max_length: int,
    system_prompt: str | None = None,
) -> EncodedExample:
    """Render one example with the chat template and locate its loss targets.

    The assistant turn is `response_prefix + response`. When there is a prefix, the prefix and the
    response are tokenised separately and joined, so the first response token starts exactly at
    the boundary (tokenising the joined text could merge the last prefix token with the first
    response token). This matches generation, where the response continues from the prefix's
    last token. Sequences longer than `max_length` are cut at the end.
    """
    head = build_messages(example.prompt, system_prompt)
    messages = [*head, {"role": "assistant", "content": example.response_prefix + example.response}]
    ids, spans = encode_messages(tokenizer, messages, add_generation_prompt=False, return_content_spans=True)
    content_start, content_end = spans[-1]

    if example.response_prefix:
        prefix_ids = _assistant_content_ids(tokenizer, head, example.response_prefix)
        response_ids = _assistant_content_ids(tokenizer, head, example.response)
        ids = ids[:content_start] + prefix_ids + response_ids + ids[content_end:]
        target_start = content_start + len(prefix_ids)
        response_end = target_start + len(response_ids)
    else:
        target_start = content_start
        response_end = content_end

    target_end = response_end
    if response_end < len(ids) and ids[response_end] in end_of_turn_ids:
        target_end = response_end + 1

    truncated = len(ids) > max_length
    if truncated:
        ids = ids[:max_length]
        target_end = min(target_end, max_length)
        target_start = min(target_start, target_end)
    # Position 0 has no preceding position whose logits predict it; chat templates always put a header first.
    target_start = max(target_start, 1)
    target_end = max(target_end, target_start)
    return EncodedExample(example, tuple(ids), target_start, target_end, truncated)


def encode_examples(
    tokenizer,
    examples: list[TrainingExample],
    *,
    end_of_turn_ids: set[int],
    max_length: int,
    system_prompt: str | None = None,
) -> list[EncodedExample]:
    """Encode examples and log how many were cut at `max_length`."""
    encoded = [
        encode_example(tokenizer, example, end_of_turn_ids=end_of_turn_ids, max_length=max_length,
                       system_prompt=system_prompt)
        for example in examples
    ]
    truncated = sum(item.truncated for item in encoded)
    empty = sum(item.target_start == item.target_end for item in encoded)
    if truncated:
        logger.warning(
            "%d of %d examples are longer than %d tokens and were cut at the end; %d lost every loss target",
            truncated, len(encoded), max_length, empty,
        )
    return encoded


@dataclass
class Batch:
    """A right-padded batch with its loss-target positions in packed order."""

    examples: list[EncodedExample]
    input_ids: torch.Tensor
    """[batch, positions] token ids, padded on the right."""
    attention_mask: torch.Tensor
    target_mask: torch.Tensor
    """[batch, positions] bool: True at loss-target tokens."""
    sample_index: torch.Tensor
    """[targets] batch row of each target, row-major over `target_mask`."""
    target_ids: torch.Tensor
    """[targets] token id at each target position."""

    @property
    def size(self) -> int:
        return len(self.examples)

    def select(self, rows: list[int]) -> Batch:
        """Return the batch of the given rows, without the padding columns that none of them needs."""
        index = torch.tensor(rows, dtype=torch.long, device=self.input_ids.device)
        width = max(len(self.examples[row].input_ids) for row in rows)
        target_mask = self.target_mask[index, :width]
        input_ids = self.input_ids[index, :width]
        return Batch(
            examples=[self.examples[row] for row in rows],
            input_ids=input_ids,
            attention_mask=self.attention_mask[index, :width],
            target_mask=target_mask,
            sample_index=torch.nonzero(target_mask, as_tuple=True)[0],
            target_ids=input_ids[target_mask],
        )

    @property
    def prediction_mask(self) -> torch.Tensor:
        """[batch, positions] bool: True at the positions whose logits predict a target (one to the left)."""
        shifted = torch.zeros_like(self.target_mask)
        shifted[:, :-1] = self.target_mask[:, 1:]
        return shifted


def collate(examples: list[EncodedExample], pad_token_id: int, device: torch.device | str = "cpu") -> Batch:
    """Pad encoded examples on the right into one batch."""
    width = max(len(item.input_ids) for item in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    target_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, item in enumerate(examples):
        input_ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids, dtype=torch.long)
        attention_mask[row, : len(item.input_ids)] = 1
        target_mask[row, item.target_start : item.target_end] = True
    sample_index = torch.nonzero(target_mask, as_tuple=True)[0]
    target_ids = input_ids[target_mask]
    return Batch(
        examples=list(examples),
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        target_mask=target_mask.to(device),
        sample_index=sample_index.to(device),
        target_ids=target_ids.to(device),
    )


class ExampleStream:
    """Endless reproducible batches from a pool of examples: one shuffled pass after another.

    The batch of step t depends only on the seed, the stream name and t, so a resumed run draws
    exactly the batches it would have drawn without the interruption.
    """

    def __init__(self, name: str, examples: list[EncodedExample], *, seed: int, batch_size: int):
        if not examples:
            raise MosrError(f"no examples for the {name!r} batches")
        self.name = name
        self.examples = examples
        self.seed = seed
        self.batch_size = batch_size
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            digest = hashlib.sha256(f"{self.seed}:{self.name}:{epoch}".encode()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
            self._orders[epoch] = torch.randperm(len(self.examples), generator=generator).tolist()
        return self._orders[epoch]

    def indices(self, step: int) -> list[int]:
        """Return the pool indices of the batch at `step`."""
        count = len(self.examples)
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        return [self._order(position // count)[position % count] for position in positions]

    def batch(self, step: int, pad_token_id: int, device: torch.device | str) -> Batch:
        return collate([self.examples[index] for index in self.indices(step)], pad_token_id, device)
