"""Utility cost of a defense: how far an adapter moves the model's output distribution on benign text."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mosr.errors import MosrError
from mosr.models import LoadedModel, build_messages, encode_messages


@torch.no_grad()
def kl_to_base(
    loaded: LoadedModel,
    prompts: list[str],
    responses: list[str],
    *,
    system_prompt: str | None = None,
    batch_size: int = 8,
    max_length: int = 384,
    progress: bool = True,
) -> float:
    """Mean KL(base || adapted) in nats per response token, over benign prompts with the base model's responses.

    The base distribution comes from the same weights with the adapter disabled, so `loaded.model`
    must be a PeftModel. Responses are teacher-forced: the value measures how much the adapter
    changes the next-token distribution along the base model's own answers.
    """
    model = loaded.model
    if not hasattr(model, "disable_adapter"):
        raise MosrError("KL to the base model needs a model with a LoRA adapter loaded")
    if len(prompts) != len(responses) or not prompts:
        raise MosrError("KL to the base model needs the same positive number of prompts and responses")

    encoded = []
    for prompt, response in zip(prompts, responses):
        ids, spans = encode_messages(loaded.tokenizer, build_messages(prompt, system_prompt, response),
                                     add_generation_prompt=False, return_content_spans=True)
        start, end = spans[-1]
        if end > start:
            # Logits at position t predict token t + 1, so response tokens start..end-1 are predicted from start-1.
            encoded.append((ids[:max_length], max(start - 1, 0), min(end - 1, max_length - 1)))

    total, count = 0.0, 0
    pad_id = loaded.tokenizer.pad_token_id
    for begin in tqdm(range(0, len(encoded), batch_size), desc="KL to base", disable=not progress):
        batch = encoded[begin:begin + batch_size]
        width = max(len(ids) for ids, _, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        token_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for row, (ids, first, last) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention_mask[row, :len(ids)] = 1
            token_mask[row, first:last] = True
        input_ids, attention_mask, token_mask = (t.to(loaded.device) for t in (input_ids, attention_mask, token_mask))

        adapted = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        with model.disable_adapter():
            base = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        base_log_probs = F.log_softmax(base[token_mask], dim=-1)
        adapted_log_probs = F.log_softmax(adapted[token_mask], dim=-1)
        per_token = (base_log_probs.exp() * (base_log_probs - adapted_log_probs)).sum(dim=-1)
        total += float(per_token.sum())
        count += int(token_mask.sum())
    if count == 0:
        raise MosrError("KL to the base model: every response is empty")
    return total / count
