"""Speed of mosr's batched generation against one-prompt-at-a-time `generate`, on the embedded model.

Both run in one process on the same 32 XSTest prompts with greedy decoding; the texts must agree.
Run: .venv/bin/python benchmarks/generation_speed.py [--data-dir DIR] [--max-new-tokens 128]
The last line is `speedup_vs_sequential=X`.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from mosr.data import load_dataset
from mosr.generation import generate
from mosr.models import DEFAULT_MODEL, encode_chat, end_of_turn_token_ids, load_model

logger = logging.getLogger("benchmarks.generation_speed")


@torch.no_grad()
def sequential_generate(loaded, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The straightforward baseline: plain `generate` on one unpadded prompt at a time."""
    stop_ids = end_of_turn_token_ids(loaded.tokenizer, loaded.model)
    texts = []
    for ids in encode_chat(loaded.tokenizer, prompts):
        input_ids = torch.tensor([ids])
        output = loaded.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                       max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                                       pad_token_id=loaded.tokenizer.pad_token_id)
        new = output[0, input_ids.shape[1]:].tolist()
        cut = next((i for i, token in enumerate(new) if token in stop_ids), len(new))
        texts.append(loaded.tokenizer.decode(new[:cut], skip_special_tokens=True))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    loaded = load_model(args.model)
    prompts = [sample.prompt for sample in load_dataset("xstest-safe", args.data_dir, limit=args.num_prompts)]
    generate(loaded, prompts[:2], max_new_tokens=4, progress=False)  # warm-up

    start = time.perf_counter()
    batched = generate(loaded, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=False)
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    sequential = sequential_generate(loaded, prompts, args.max_new_tokens)
    sequential_s = time.perf_counter() - start

    agree = sum(record["response"] == text for record, text in zip(batched, sequential))
    print(f"prompts={len(prompts)} max_new_tokens={args.max_new_tokens} batch_size={args.batch_size} threads={torch.get_num_threads()}")
    print(f"sequential_s={sequential_s:.1f} batched_s={batched_s:.1f}")
    print(f"texts_agree={agree}/{len(prompts)}")
    print(f"speedup_vs_sequential={sequential_s / batched_s:.2f}")


if __name__ == "__main__":
    main()
