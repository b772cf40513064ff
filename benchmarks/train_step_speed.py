"""Speed of a training step of mosr's defense trainer against a straightforward step, on the embedded model.

Both steps draw the same batches and compute the same loss terms with the same method code. The
straightforward step does what published Circuit Breakers and RepBend implementations do. It runs
one full forward pass of the adapted model per example group, with all hidden states and logits at
every position. Wherever a term needs frozen states or logits, it adds one full pass of the frozen
model (adapters disabled). One backward pass over the summed loss follows. mosr's step runs only
what the losses read (see `mosr.defenses.forward`).

Each variant runs `--steps` steps from the same adapter and optimizer state, in one process, and
the loss terms of every step must agree within `--tolerance` (relative). LoRA dropout is off so
the two variants see the same computation. The adapter is first trained for `--warmup-steps`
steps, so that it differs from the frozen model when timing starts.

By default the examples are synthetic: harmful prompts from HarmBench, pseudo-malicious prompts
from XSTest's safe half, benign prompts from the harmless set, with a fixed response of about
100 tokens (timing depends on lengths, not on words). `--training-set DIR` uses a saved training
set instead.

Run: .venv/bin/python benchmarks/train_step_speed.py [--method mosr] [--steps 5] [--data-dir DIR]
Times are CPU seconds of this process, on one thread by default, so that other processes on a
shared machine do not distort them. Wall seconds are printed too. The line before last,
`cached_speedup=X`, times steps whose examples were drawn before, so that the frozen model's
states come from the cache. The last line, `speedup=X`, times steps whose examples are drawn for
the first time.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mosr.data import load_dataset
from mosr.data.examples import AUGMENTED, BENIGN, MALICIOUS, PSEUDO_MALICIOUS, REFUSAL, TrainingExample
from mosr.defenses.base import PreparationContext, Progress
from mosr.defenses.encoding import collate
from mosr.defenses.forward import FrozenStateCache, PassOutputs
from mosr.defenses.methods import create_method
from mosr.defenses.settings import TrainingSettings
from mosr.defenses.trainer import _Training, examples_by_kind
from mosr.models import DEFAULT_MODEL, load_model

logger = logging.getLogger("benchmarks.train_step_speed")

RESPONSE = (
    "Here is a detailed answer, step by step. First, gather what you need and check that every part is "
    "in place before you begin. Second, follow the instructions in order, and take notes as you go so "
    "that you can repeat the process later. Third, review the result carefully, compare it with what "
    "you expected, and fix any difference you find. Finally, clean up, store the materials safely, and "
    "write down what you learned for next time."
)
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


def synthetic_examples(data_dir: str | None, per_kind: int) -> list[TrainingExample]:
    """Examples of every kind with real prompts and a fixed response text."""
    harmful = [sample.prompt for sample in load_dataset("harmbench", data_dir, limit=per_kind)]
    pseudo = [sample.prompt for sample in load_dataset("xstest-safe", data_dir, limit=per_kind)]
    benign = [sample.prompt for sample in load_dataset("harmless", data_dir, limit=per_kind)]
    examples = []
    for index, prompt in enumerate(harmful):
        examples.append(TrainingExample(f"m{index}", MALICIOUS, prompt, RESPONSE))
        examples.append(TrainingExample(f"r{index}", REFUSAL, prompt, REFUSAL_TEXT))
        prefix = " ".join(RESPONSE.split()[: index % 12])
        examples.append(TrainingExample(f"a{index}", AUGMENTED, prompt, " " + REFUSAL_TEXT if prefix else REFUSAL_TEXT,
                                        response_prefix=prefix))
    examples += [TrainingExample(f"p{index}", PSEUDO_MALICIOUS, prompt, RESPONSE) for index, prompt in enumerate(pseudo)]
    examples += [TrainingExample(f"b{index}", BENIGN, prompt, RESPONSE) for index, prompt in enumerate(benign)]
    return examples


def straightforward_step(training: _Training, step: int) -> dict[str, float]:
    """Run one training step with full forward passes (all hidden states and logits) for every group."""
    model = training.model
    progress = Progress(step=step, total_steps=training.settings.steps)
    loss_layers = training.settings.loss_layers
    total = None
    values = {}
    for group in training.method.groups():
        batch = training.streams[group.name].batch(step, training.pad_token_id, training.device)
        outputs = PassOutputs(batch=batch)

        adapted = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True,
                        use_cache=False)
        outputs.states = torch.stack([adapted.hidden_states[layer][batch.target_mask] for layer in loss_layers], 1)
        outputs.logits = adapted.logits[batch.prediction_mask]

        if group.request.frozen_states or group.request.frozen_logits:
            model.eval()
            with torch.no_grad(), model.disable_adapter():
                frozen = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               output_hidden_states=True, use_cache=False)
            model.train()
            frozen_states = [frozen.hidden_states[layer][batch.target_mask] for layer in loss_layers]
            outputs.frozen_states = torch.stack(frozen_states, 1)
            outputs.frozen_logits = frozen.logits[batch.prediction_mask]

        for term in training.method.loss_terms(group.name, outputs, progress):
            values[term.name] = float(term.value.detach())
            weighted = term.coefficient * term.value
            total = weighted if total is None else total + weighted

    total.backward()
    torch.nn.utils.clip_grad_norm_(training.parameters, training.settings.max_grad_norm)
    training.optimizer.step()
    training.scheduler.step()
    training.optimizer.zero_grad(set_to_none=True)
    return values


def snapshot(training: _Training) -> dict:
    return {
        "parameters": [parameter.detach().clone() for parameter in training.parameters],
        "optimizer": copy.deepcopy(training.optimizer.state_dict()),
        "scheduler": copy.deepcopy(training.scheduler.state_dict()),
    }


def restore(training: _Training, state: dict) -> None:
    with torch.no_grad():
        for parameter, saved in zip(training.parameters, state["parameters"]):
            parameter.copy_(saved)
    training.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    training.scheduler.load_state_dict(copy.deepcopy(state["scheduler"]))


def run_steps(step_function, first_step: int, count: int) -> tuple[list[float], list[float], list[dict]]:
    """Run `count` steps; return their wall times, their CPU times (this process) and their loss terms."""
    wall_times, cpu_times, values = [], [], []
    for step in range(first_step, first_step + count):
        wall_started = time.perf_counter()
        cpu_started = time.process_time()
        values.append(step_function(step))
        cpu_times.append(time.process_time() - cpu_started)
        wall_times.append(time.perf_counter() - wall_started)
    return wall_times, cpu_times, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--method", default="mosr")
    parser.add_argument("--data-dir")
    parser.add_argument("--training-set", help="folder of a saved training set (default: synthetic examples)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup-steps", type=int, default=2, help="training steps before timing starts")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default: 1, so that CPU time measures the work done)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest relative loss difference allowed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model)
    if args.training_set:
        from mosr.data.training_set import load_training_set

        examples = examples_by_kind(load_training_set(args.training_set))
    else:
        examples = examples_by_kind(synthetic_examples(args.data_dir, per_kind=32))
    total_steps = args.warmup_steps + args.steps
    settings = TrainingSettings(steps=total_steps, batch_size=args.batch_size, lora_dropout=0.0).resolved(loaded.num_layers)
    method = create_method(args.method)
    with tempfile.TemporaryDirectory() as run_dir:
        method.prepare(PreparationContext(loaded=loaded, examples=examples, run_dir=Path(run_dir),
                                          system_prompt=None, resume=False))
        training = _Training(loaded, method, settings, examples, Path(run_dir), progress=False)
    training.model.train()
    logger.info("model %s, method %s, loss layers %s, LoRA blocks %s, %d torch threads", args.model, args.method,
                settings.loss_layers, settings.lora_layers, torch.get_num_threads())

    for step in range(args.warmup_steps):
        training._step(step, None, check_gradients=step == 0)
    state = snapshot(training)
    cache = training.runner.cache
    # One untimed straightforward step, so that both variants start with warm allocators.
    straightforward_step(training, args.warmup_steps)
    restore(training, state)

    def ours(step):
        return training._step(step, None, check_gradients=False)["losses"]

    # First pass over the data: the frozen-state cache is empty, as for examples drawn the first time.
    training.runner.cache = FrozenStateCache(cache.max_bytes) if cache is not None else None
    first_wall, first_cpu, first_values = run_steps(ours, args.warmup_steps, args.steps)
    restore(training, state)
    plain_wall, plain_cpu, plain_values = run_steps(lambda step: straightforward_step(training, step),
                                                    args.warmup_steps, args.steps)
    # Later passes: every example's frozen states are cached.
    if training.runner.cache is not None:
        for group in training.method.groups():
            stream = training.streams[group.name]
            for start in range(0, len(stream.examples), args.batch_size):
                rows = stream.examples[start : start + args.batch_size]
                training.runner._frozen_entries(collate(rows, training.pad_token_id, training.device))
    restore(training, state)
    cached_wall, cached_cpu, cached_values = run_steps(ours, args.warmup_steps, args.steps)

    worst = 0.0
    for values in (first_values, cached_values):
        for ours_terms, plain_terms in zip(values, plain_values):
            for name, value in ours_terms.items():
                worst = max(worst, abs(value - plain_terms[name]) / max(abs(plain_terms[name]), 1e-6))
    logger.info("largest relative difference of a loss term: %.2e", worst)
    if worst > args.tolerance:
        raise SystemExit(f"loss terms differ by {worst:.2e} (relative), more than the tolerance {args.tolerance}")

    logger.info("cpu seconds per step: straightforward %s, mosr first pass %s, mosr cached %s",
                [round(value, 2) for value in plain_cpu], [round(value, 2) for value in first_cpu],
                [round(value, 2) for value in cached_cpu])
    median = statistics.median
    print(f"method={args.method} steps={args.steps} batch_size={args.batch_size} threads={torch.get_num_threads()}")
    print(f"wall_s: straightforward={median(plain_wall):.3f} mosr_first_pass={median(first_wall):.3f} "
          f"mosr_cached={median(cached_wall):.3f}")
    print(f"cpu_s: straightforward={median(plain_cpu):.3f} mosr_first_pass={median(first_cpu):.3f} "
          f"mosr_cached={median(cached_cpu):.3f}")
    print(f"cached_speedup={median(plain_cpu) / median(cached_cpu):.2f}")
    print(f"speedup={median(plain_cpu) / median(first_cpu):.2f}")


if __name__ == "__main__":
    main()
