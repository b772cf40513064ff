"""Speed of mosr's batched hidden-state extraction against a one-prompt-at-a-time loop, on the embedded model.

Both extract last-token and mean-pooled states at all layers for the same prompts (by default 64
each from harmless, xstest-safe, oktest and harmbench, so lengths vary) in one process, without
the cache. The baseline is a plain forward pass with `output_hidden_states=True` on one unpadded
prompt at a time. The vectors must agree.

The prompts are timed in chunks of 4 batches, batched and sequential back to back, and the
order of the two alternates between chunks. On a machine shared with other jobs, both methods
then see about the same load. Wall time and process CPU time are reported.
Run: .venv/bin/python benchmarks/extraction_speed.py [--data-dir DIR] [--num-prompts 256] [--batch-size 16]
The last line is `speedup_vs_sequential=X`.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from mosr.data import load_dataset
from mosr.models import DEFAULT_MODEL, encode_chat, load_model
from mosr.representations import extract_hidden_states

logger = logging.getLogger("benchmarks.extraction_speed")

SOURCES = ("harmless", "xstest-safe", "oktest", "harmbench")


@torch.no_grad()
def sequential_extract(loaded, prompts: list[str]) -> dict[str, np.ndarray]:
    """Extract states the straightforward way, as the baseline: one unpadded forward pass per prompt, pooled in numpy."""
    last, mean = [], []
    for ids in encode_chat(loaded.tokenizer, prompts):
        outputs = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
        stacked = torch.stack(outputs.hidden_states, dim=1)[0].float().numpy()  # [layers, tokens, hidden]
        last.append(stacked[:, -1, :])
        mean.append(stacked.mean(axis=1))
    return {"last": np.stack(last), "mean": np.stack(mean)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--num-prompts", type=int, default=256, help="total prompts, split evenly over the sources")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    loaded = load_model(args.model)
    per_source = args.num_prompts // len(SOURCES)
    prompts = [sample.prompt for name in SOURCES for sample in load_dataset(name, args.data_dir, limit=per_source)]
    lengths = [len(ids) for ids in encode_chat(loaded.tokenizer, prompts)]
    extract_hidden_states(loaded, prompts[:2], progress=False)  # warm-up

    wall = {"batched": 0.0, "sequential": 0.0}
    cpu = {"batched": 0.0, "sequential": 0.0}
    parts: dict[str, list[dict[str, np.ndarray]]] = {"batched": [], "sequential": []}
    runners = {
        "batched": lambda chunk: extract_hidden_states(loaded, chunk, batch_size=args.batch_size, progress=False),
        "sequential": lambda chunk: sequential_extract(loaded, chunk),
    }
    chunk_size = 4 * args.batch_size
    for round_index, start_index in enumerate(range(0, len(prompts), chunk_size)):
        chunk = prompts[start_index : start_index + chunk_size]
        order = ("batched", "sequential") if round_index % 2 == 0 else ("sequential", "batched")
        for method in order:
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            parts[method].append(runners[method](chunk))
            wall[method] += time.perf_counter() - wall_start
            cpu[method] += time.process_time() - cpu_start
    batched = {pooling: np.concatenate([part[pooling] for part in parts["batched"]]) for pooling in ("last", "mean")}
    sequential = {pooling: np.concatenate([part[pooling] for part in parts["sequential"]]) for pooling in ("last", "mean")}

    differences = {}
    for pooling in ("last", "mean"):
        scale = np.abs(sequential[pooling]).max(axis=-1, keepdims=True)
        differences[pooling] = float((np.abs(batched[pooling] - sequential[pooling]) / np.maximum(scale, 1e-6)).max())
    agree = all(value < 1e-3 for value in differences.values())

    print(f"prompts={len(prompts)} tokens_min={min(lengths)} tokens_max={max(lengths)} layers={loaded.num_layers + 1} "
          f"batch_size={args.batch_size} threads={torch.get_num_threads()}")
    print(f"sequential_s={wall['sequential']:.1f} batched_s={wall['batched']:.1f}")
    print(f"sequential_cpu_s={cpu['sequential']:.1f} batched_cpu_s={cpu['batched']:.1f} "
          f"cpu_speedup_vs_sequential={cpu['sequential'] / cpu['batched']:.2f}")
    print(f"max_relative_difference_last={differences['last']:.2e} max_relative_difference_mean={differences['mean']:.2e} "
          f"vectors_agree={agree}")
    print(f"speedup_vs_sequential={wall['sequential'] / wall['batched']:.2f}")


if __name__ == "__main__":
    main()
