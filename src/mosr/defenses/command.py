"""`mosr train`: train one LoRA defense on a model and write it to a run folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mosr.defenses.lora import parse_layer_list
from mosr.defenses.methods import METHODS
from mosr.defenses.trainer import TRAINING_SET_DIR
from mosr.cli import output_folder, positive_int
from mosr.errors import MosrError

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the `train` command to the `mosr` argument parser."""
    from mosr.models import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "train",
        help="train a LoRA defense (circuit-breakers, repbend, sft or mosr) and save the adapter",
        description="Train a LoRA defense on a chat model. The output folder is a standard PEFT adapter folder "
                    "plus config.json, losses.jsonl and loss.png; an interrupted run continues from its newest "
                    "checkpoint when the same command is run again.",
    )
    parser.add_argument("--method", required=True, choices=list(METHODS), help="defense to train")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"embedded model name, .gguf file, local folder or Hugging Face id (default: {DEFAULT_MODEL})")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow model code from the model's repository to run (off by default)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of the model's weights; adapters train in float32 (default: float32)")
    parser.add_argument("--device", help="device to train on, e.g. cuda (default: where the model loads, the CPU)")
    parser.add_argument("--output", "-o", required=True, type=output_folder, help="run folder for the adapter, settings and losses")

    data = parser.add_argument_group("training data")
    data.add_argument("--training-set", metavar="DIR",
                      help=f"saved training set (its folder or training_set.jsonl); default: build one from the "
                           f"model into OUTPUT/{TRAINING_SET_DIR}")
    data.add_argument("--data-dir", help="benchmark data folder for building (default: $MOSR_DATA_DIR, else ../shared/data)")
    data.add_argument("--n-malicious", type=int, help="harmful prompts to complete when building (default: all)")
    data.add_argument("--n-benign", type=int, default=512, help="harmless prompts to complete when building (default: 512)")

    training = parser.add_argument_group("training")
    training.add_argument("--steps", type=positive_int, help="optimizer steps (default: 80)")
    training.add_argument("--batch-size", type=positive_int, help="examples per group and step (default: 4)")
    training.add_argument("--learning-rate", type=float, help="AdamW learning rate (default: 1e-3)")
    training.add_argument("--seed", type=int, default=0, help="seed of the adapters, batches and built data (default: 0)")
    training.add_argument("--max-length", type=positive_int, help="tokens per example; longer ones are cut (default: 256)")
    training.add_argument("--lora-rank", type=positive_int, help="LoRA rank (default: 8)")
    training.add_argument("--lora-alpha", type=float, help="LoRA alpha (default: 16)")
    training.add_argument("--lora-dropout", type=float, help="LoRA dropout (default: 0.05)")
    training.add_argument("--lora-init-std", type=float,
                          help="standard deviation of the initial lora_B entries, 0 = zeros (default: 0.01)")
    training.add_argument("--lora-layers", help="decoder blocks to adapt, from 0, e.g. '7-19' (default: from a "
                                                "quarter of the depth to the deepest loss layer)")
    training.add_argument("--lora-modules", help="comma-separated linear-layer names to adapt (default: the "
                                                 "architecture's attention and MLP projections)")
    training.add_argument("--loss-layers", help="hidden-state indices of the representation losses, 1 = output of the "
                                                "first block, e.g. '10,20' (default: a third and two thirds of the depth)")
    training.add_argument("--system-prompt", help="system message of the training conversations (default: the chat "
                                                  "template's own)")
    training.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints (default: 25)")
    training.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    training.add_argument("--frozen-cache-mb", type=int, help="CPU memory for cached frozen-model states, 0 = off "
                                                              "(default: 2048)")

    method = parser.add_argument_group("method options")
    method.add_argument("--erasure", choices=("circuit-breakers", "repbend"),
                        help="mosr only: erasure and retain losses to use (default: circuit-breakers)")
    method.add_argument("--no-overlap-weighting", action="store_true",
                        help="mosr only: erase every malicious example with weight 1 (ablation)")
    method.add_argument("--no-context-augmentation", action="store_true",
                        help="mosr only: leave out the cross-entropy on augmented examples (ablation)")
    method.add_argument("--alpha", type=float,
                        help="circuit-breakers, or mosr with circuit-breakers erasure: schedule scale (default: 10)")
    method.add_argument("--retain-kl", action="store_true",
                        help="circuit-breakers, sft, or mosr with circuit-breakers erasure: add KL to the base model "
                             "on retained examples")
    method.add_argument("--absolute-retain", action="store_true",
                        help="circuit-breakers, repbend, mosr: use the published absolute retain distance "
                             "||h_M - h_M0|| instead of the distance relative to ||h_M0||")
    method.add_argument("--overlap-strength", type=float, help="mosr: λ of the overlap weights, 0..1 (default: 0.5)")
    method.add_argument("--overlap-temperature", type=float, help="mosr: τ of the overlap weights (default: 0.1)")
    method.add_argument("--overlap-top-k", type=positive_int,
                        help="mosr: pseudo-malicious neighbours per overlap (default: 5)")
    method.add_argument("--overlap-layer", type=int, help="mosr: hidden-state index of the overlap representations "
                                                          "(default: the middle layer)")
    method.add_argument("--overlap-pooling", choices=("last", "mean"), help="mosr: prompt pooling (default: last)")
    method.add_argument("--augmentation-weight", type=float,
                        help="mosr: coefficient of the augmentation cross-entropy (default: 0.3)")
    method.add_argument("--retain-ce-weight", type=float,
                        help="mosr: coefficient of the retain examples' cross-entropy that balances the "
                             "augmentation (default: 0.3)")
    parser.set_defaults(func=run_train)


def training_settings_from_args(args):
    """Build `TrainingSettings` from the command-line values that were given."""
    from mosr.defenses.settings import TrainingSettings

    values = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_length": args.max_length,
        "lora_rank": args.lora_rank,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "lora_init_std": args.lora_init_std,
        "lora_layers": parse_layer_list(args.lora_layers) if args.lora_layers else None,
        "lora_modules": [name.strip() for name in args.lora_modules.split(",") if name.strip()] if args.lora_modules else None,
        "loss_layers": parse_layer_list(args.loss_layers) if args.loss_layers else None,
        "system_prompt": args.system_prompt,
        "checkpoint_every": args.checkpoint_every,
        "frozen_cache_mb": args.frozen_cache_mb,
    }
    values = {key: value for key, value in values.items() if value is not None}
    return TrainingSettings(seed=args.seed, gradient_checkpointing=args.gradient_checkpointing, **values)


def _reject_options(args, method: str, names: list[str]) -> None:
    flags_given = [name for name in names if getattr(args, name.replace("-", "_")) not in (None, False)]
    if flags_given:
        raise MosrError(f"--{flags_given[0]} does not apply to --method {method}")


def method_options_from_args(args) -> dict:
    """Build the method's options dict from the command-line values that were given."""
    overlap_flags = ["erasure", "no-overlap-weighting", "no-context-augmentation", "overlap-strength",
                     "overlap-temperature", "overlap-top-k", "overlap-layer", "overlap-pooling", "augmentation-weight",
                     "retain-ce-weight"]
    relative_retain = not args.absolute_retain
    if args.method == "circuit-breakers":
        _reject_options(args, args.method, overlap_flags)
        options = {"retain_kl": args.retain_kl, "relative_retain": relative_retain}
        if args.alpha is not None:
            options["alpha"] = args.alpha
        return options
    if args.method == "repbend":
        _reject_options(args, args.method, overlap_flags + ["alpha", "retain-kl"])
        return {"relative_retain": relative_retain}
    if args.method == "sft":
        _reject_options(args, args.method, overlap_flags + ["alpha", "absolute-retain"])
        return {"retain_kl": args.retain_kl}

    options: dict = {
        "overlap_weighting": not args.no_overlap_weighting,
        "context_augmentation": not args.no_context_augmentation,
    }
    if args.erasure:
        options["erasure"] = args.erasure
    if args.erasure == "repbend" and (args.alpha is not None or args.retain_kl):
        raise MosrError("--alpha and --retain-kl apply to --erasure circuit-breakers, not repbend")
    circuit_breakers = {"retain_kl": args.retain_kl, "relative_retain": relative_retain}
    if args.alpha is not None:
        circuit_breakers["alpha"] = args.alpha
    options["circuit_breakers"] = circuit_breakers
    options["repbend"] = {"relative_retain": relative_retain}
    overlap = {
        "strength": args.overlap_strength,
        "temperature": args.overlap_temperature,
        "top_k": args.overlap_top_k,
        "layer": args.overlap_layer,
        "pooling": args.overlap_pooling,
    }
    options["overlap"] = {key: value for key, value in overlap.items() if value is not None}
    if args.augmentation_weight is not None:
        options["augmentation_weight"] = args.augmentation_weight
    if args.retain_ce_weight is not None:
        options["retain_ce_weight"] = args.retain_ce_weight
    return options


def run_train(args) -> int:
    """Load the model and the training set (building it if needed), train, and print where the adapter is."""
    from mosr.defenses.trainer import train
    from mosr.models import load_model

    settings = training_settings_from_args(args)
    options = method_options_from_args(args)
    output = Path(args.output)

    loaded = load_model(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    # Layers out of range fail here, before building a training set takes minutes.
    settings.resolved(loaded.num_layers)
    if args.training_set:
        from mosr.data.training_set import load_training_set

        training_set = load_training_set(args.training_set)
    else:
        from mosr.data.training_set import build_training_set

        logger.info("building the training set from %s into %s", args.model, output / TRAINING_SET_DIR)
        training_set = build_training_set(loaded, output_dir=output / TRAINING_SET_DIR, data_dir=args.data_dir,
                                          seed=args.seed, n_malicious=args.n_malicious, n_benign=args.n_benign)

    result = train(loaded, training_set, method=args.method, output_dir=output, settings=settings, options=options)
    losses = ", ".join(f"{name} {value:.4f}" for name, value in result.final_losses.items())
    sys.stdout.write(f"{result.method}: {result.steps} steps, final losses: {losses}\n")
    sys.stdout.write(f"adapter: {result.adapter_dir}\n")
    return 0
