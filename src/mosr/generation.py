"""Batched, length-sorted, resumable greedy generation.

Prompts are rendered by `mosr.models.encode_chat`, sorted by token length so that each batch needs
little padding, left-padded with an attention mask (right padding would make the model continue
from pad tokens), and generated greedily. Each finished sample is appended to a JSONL file at once,
so a stopped run loses at most one batch and continues without recomputing finished samples.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mosr.errors import MosrError
from mosr.models import LoadedModel, encode_chat, end_of_turn_token_ids

logger = logging.getLogger(__name__)

END_OF_TURN = "end_of_turn"
LENGTH = "length"


def read_jsonl_records(path: Path) -> list[dict]:
    """Read a results file written by `append_jsonl`, dropping a last line cut off by a crash."""
    if not path.is_file():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                logger.warning("%s: dropping an incomplete last line (the previous run was interrupted)", path)
                path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
                break
            raise MosrError(f"{path}, line {number}: invalid JSON; delete the file to start this step again") from None
    return records


def append_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()


def _left_pad(batch: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    return input_ids.to(device), attention_mask.to(device)


def _decode_new_tokens(tokenizer, tokens: list[int], stop_ids: set[int]) -> tuple[str, str, int]:
    """Cut generated tokens at the first end-of-turn token; return text, stop reason and token count."""
    for position, token in enumerate(tokens):
        if token in stop_ids:
            return tokenizer.decode(tokens[:position], skip_special_tokens=True), END_OF_TURN, position + 1
    # A length stop can cut a multi-byte character in half; the orphaned bytes decode to U+FFFD.
    text = tokenizer.decode(tokens, skip_special_tokens=True).rstrip("\ufffd")
    return text, LENGTH, len(tokens)


@torch.no_grad()
def generate_batch(loaded: LoadedModel, batch: list[list[int]], max_new_tokens: int) -> list[tuple[str, str, int]]:
    """Generate greedily for one batch of token-id prompts; return (text, stop_reason, new tokens) per prompt."""
    tokenizer = loaded.tokenizer
    stop_ids = end_of_turn_token_ids(tokenizer, loaded.model)
    pad_id = tokenizer.pad_token_id
    input_ids, attention_mask = _left_pad(batch, pad_id, loaded.device)
    output = loaded.model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=stop_ids,
        pad_token_id=pad_id,
    )
    new_tokens = output[:, input_ids.shape[1]:].tolist()
    return [_decode_new_tokens(tokenizer, tokens, set(stop_ids)) for tokens in new_tokens]


def _drop_stale(done: dict[str, dict], ids: list[str], prompts: list[str], prefills: list[str] | None,
                path: Path) -> dict[str, dict]:
    """Remove stored samples made from another prompt or prefill than the one now given for their id.

    The file is rewritten without them, so that they are generated again and never mixed with
    current samples (after an edited data file or attack template, for example).
    """
    expected = {sample_id: (prompts[index], None if prefills is None else prefills[index])
                for index, sample_id in enumerate(ids)}
    stale = {sample_id for sample_id, record in done.items()
             if sample_id in expected and (record["prompt"], record.get("prefill")) != expected[sample_id]}
    if not stale:
        return done
    logger.warning("%s: %d stored samples were made from other prompts or prefills (changed data or attack), "
                   "so they are generated again", path, len(stale))
    current = {sample_id: record for sample_id, record in done.items() if sample_id not in stale}
    path.unlink()
    append_jsonl(path, list(current.values()))
    return current


def generate(
    loaded: LoadedModel,
    prompts: list[str],
    *,
    ids: list[str] | None = None,
    system_prompt: str | None = None,
    raw: bool = False,
    prefills: list[str] | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    output_path: str | Path | None = None,
    progress: bool = True,
    description: str = "generating",
) -> list[dict]:
    """Generate a response to each prompt; return one record per prompt, in input order.

    Each record has `id`, `prompt`, `response`, `stop_reason` ("end_of_turn" or "length"),
    `num_new_tokens` and `empty` (the response is empty or whitespace only). With `prefills`, each
    response continues its prefill, which the record keeps as `prefill` and leaves out of
    `response`. With `output_path`, records are appended as batches finish and samples already in
    the file are not generated again; a stored sample whose prompt or prefill differs is generated again.
    """
    if max_new_tokens <= 0:
        raise MosrError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    if batch_size <= 0:
        raise MosrError(f"--batch-size must be positive, got {batch_size}")
    ids = [str(index) for index in range(len(prompts))] if ids is None else [str(value) for value in ids]
    if len(ids) != len(prompts):
        raise MosrError(f"got {len(ids)} ids for {len(prompts)} prompts")
    if len(set(ids)) != len(ids):
        raise MosrError("sample ids must be unique within one generation file")

    done: dict[str, dict] = {}
    if output_path is not None:
        output_path = Path(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        done = {record["id"]: record for record in read_jsonl_records(output_path)}
        done = _drop_stale(done, ids, prompts, prefills, output_path)
        if done:
            logger.info("%s: %d of %d samples already generated", output_path, len(done), len(prompts))

    todo = [index for index, sample_id in enumerate(ids) if sample_id not in done]
    encoded = encode_chat(loaded.tokenizer, [prompts[index] for index in todo], system_prompt=system_prompt, raw=raw,
                          prefills=None if prefills is None else [prefills[index] for index in todo])
    # Longest first, so that an out-of-memory error shows up in the first batch, not the last.
    order = sorted(range(len(todo)), key=lambda position: -len(encoded[position]))

    with tqdm(total=len(todo), desc=description, unit="prompt", disable=not progress or not todo) as bar:
        for start in range(0, len(order), batch_size):
            positions = order[start:start + batch_size]
            results = generate_batch(loaded, [encoded[position] for position in positions], max_new_tokens)
            records = []
            for position, (text, stop_reason, count) in zip(positions, results):
                index = todo[position]
                record = {
                    "id": ids[index],
                    "prompt": prompts[index],
                    "response": text,
                    "stop_reason": stop_reason,
                    "num_new_tokens": count,
                    "empty": not text.strip(),
                }
                if prefills is not None:
                    record["prefill"] = prefills[index]
                done[ids[index]] = record
                records.append(record)
            if output_path is not None:
                append_jsonl(output_path, records)
            bar.update(len(positions))

    return [done[sample_id] for sample_id in ids]
