"""The `mosr analyze` subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def _layer_index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer index (a whole number), got {text!r}") from None


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 prompts per group, got {value}")
    return value


def register(subparsers) -> None:
    """Add the `analyze` subcommand to the `mosr` subparsers."""
    from mosr.cli import add_model_arguments, output_folder, positive_int

    parser = subparsers.add_parser(
        "analyze",
        help="test whether pseudo-malicious prompts sit between benign and malicious ones in the hidden states",
        description="Extract hidden states of benign, pseudo-malicious and malicious prompts and measure, per layer, "
                    "where pseudo-malicious prompts sit on the benign-to-malicious direction.",
    )
    add_model_arguments(parser)
    parser.add_argument("--layers", type=_layer_index, nargs="+", metavar="L",
                        help="layers to analyze: 0 is the embeddings, L the output of decoder block L; negative "
                             "indices count from the end (default: all)")
    parser.add_argument("--pooling", choices=("last", "mean"), default="last",
                        help="one vector per prompt: the last prompt token, or the mean over prompt tokens (default: last)")
    parser.add_argument("--pre-norm", action="store_true",
                        help="take the last layer before the model's final norm (default: after it, as transformers returns it)")
    parser.add_argument("--data-dir", help="benchmark data folder (default: $MOSR_DATA_DIR, else ../shared/data)")
    parser.add_argument("--benign", metavar="FILE", help="CSV/JSONL/JSON file of benign prompts (default: harmless)")
    parser.add_argument("--pseudo-malicious", metavar="FILE",
                        help="file of harmless prompts that look harmful (default: xstest-safe + oktest)")
    parser.add_argument("--malicious", metavar="FILE", help="file of harmful prompts (default: xstest-unsafe + harmbench)")
    parser.add_argument("--prompt-column", default="prompt", help="prompt column of the group files (default: prompt)")
    parser.add_argument("--limit-per-group", type=_limit, metavar="N",
                        help="analyze a seeded random subset of N prompts per group (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for subsets and the probe split (default: 0)")
    parser.add_argument("--eval-run", metavar="DIR",
                        help="`mosr evaluate` run folder of the same model, to link positions to refusals")
    parser.add_argument("--system-prompt", help="system message (default: the chat template's own default, if any)")
    parser.add_argument("--raw-prompts", action="store_true", help="send prompts without a chat template (base models)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="prompts per forward pass (default: 16)")
    parser.add_argument("--plot-layers", type=_layer_index, nargs="+", metavar="L",
                        help="layers shown in the PCA and histogram plots (default: 4 evenly spaced analyzed layers)")
    parser.add_argument("--cache-dir", help="hidden-state cache folder (default: $MOSR_CACHE/hidden_states)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the hidden-state cache")
    parser.add_argument("--no-first-token-score", action="store_true",
                        help="skip the first-token refusal score (saves one forward pass per prompt)")
    parser.add_argument("--output", "-o", required=True, type=output_folder, help="run folder to write analysis.json, analysis.md and plots to")
    parser.set_defaults(func=run_analyze)


def run_analyze(args) -> int:
    """Run `mosr analyze` from parsed arguments and print analysis.md."""
    from mosr.analysis.behaviour import read_refusal_labels
    from mosr.analysis.run import AnalysisSettings, analyze, load_settings_groups
    from mosr.models import load_model

    files = {
        group: path
        for group, path in (("benign", args.benign), ("pseudo_malicious", args.pseudo_malicious),
                            ("malicious", args.malicious))
        if path is not None
    }
    settings = AnalysisSettings(
        layers=args.layers, pooling=args.pooling, final_norm=not args.pre_norm, data_dir=args.data_dir,
        group_files=files, prompt_column=args.prompt_column, limit_per_group=args.limit_per_group, seed=args.seed,
        eval_run=args.eval_run, system_prompt=args.system_prompt, raw_prompts=args.raw_prompts,
        batch_size=args.batch_size, plot_layers=args.plot_layers, cache_dir=args.cache_dir,
        use_cache=not args.no_cache, first_token_score=not args.no_first_token_score,
    )
    # Bad group files and run folders fail here, before a model takes time to load.
    groups = load_settings_groups(settings)
    if settings.eval_run:
        read_refusal_labels(settings.eval_run)

    loaded = load_model(args.model, adapter=args.adapter, trust_remote_code=args.trust_remote_code)
    analyze(loaded, settings, args.output, groups=groups)
    sys.stdout.write(Path(args.output, "analysis.md").read_text(encoding="utf-8"))
    return 0
