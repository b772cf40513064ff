"""The `mosr` command: evaluate, judge, analyze, train and run."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from mosr import __version__
from mosr.errors import MosrError

logger = logging.getLogger("mosr")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def output_folder(text: str) -> str:
    """Argparse type for a run folder: not empty and not an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the output folder must not be empty")
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return text


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from mosr.models import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"embedded model name, .gguf file, local folder or Hugging Face id (default: {DEFAULT_MODEL})")
    parser.add_argument("--adapter", help="folder of a PEFT (LoRA) adapter to load on top of the model")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow model code from the model's repository to run (off by default)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="benchmark data folder (default: $MOSR_DATA_DIR, else ../shared/data)")
    parser.add_argument("--limit", type=positive_int,
                        help="evaluate a seeded random subset of this many prompts per benchmark")
    parser.add_argument("--seed", type=int, default=0, help="seed for subsets and bootstrap intervals (default: 0)")


def _register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="measure over-refusal and attack success rates of a model")
    add_model_arguments(parser)
    parser.add_argument("--benchmark", action="append", required=True, metavar="NAME_OR_FILE",
                        help="benchmark name (xstest, oktest, harmbench, jailbreakbench, strongreject, advbench, "
                             "harmless) or a CSV/JSONL file of prompts; repeat for several")
    add_data_arguments(parser)
    parser.add_argument("--prompt-column", default="prompt", help="prompt column of user files (default: prompt)")
    parser.add_argument("--system-prompt", help="system message (default: the chat template's own default, if any)")
    parser.add_argument("--raw-prompts", action="store_true", help="send prompts without a chat template (base models)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=128, help="tokens generated per response (default: 128)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="prompts generated together (default: 16)")
    parser.add_argument("--refusal-judge", help="Hugging Face id or folder of a model-based refusal judge (default: rule-based)")
    parser.add_argument("--harm-judge", help="Hugging Face id or folder of a model-based harm judge, e.g. a HarmBench "
                                             "classifier or Llama Guard (default: rule-based)")
    parser.add_argument("--attack", action="append", default=[], metavar="NAME_OR_FILE",
                        help="also measure attack success under this jailbreak attack: prefill, refusal-suppression, "
                             "prefix-injection, fiction, or a .txt template with a {prompt} placeholder; repeat for several")
    parser.add_argument("--output", "-o", required=True, type=output_folder,
                        help="run folder; an interrupted run continues where it stopped")
    parser.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from mosr.evaluate import EvaluationSettings, evaluate, resolve_benchmarks
    from mosr.models import check_adapter_folder, load_model

    settings = EvaluationSettings(
        benchmarks=args.benchmark, limit=args.limit, seed=args.seed, data_dir=args.data_dir,
        prompt_column=args.prompt_column, system_prompt=args.system_prompt, raw_prompts=args.raw_prompts,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        refusal_judge=args.refusal_judge, harm_judge=args.harm_judge, attacks=args.attack,
    )
    # Bad benchmark names, files, attacks and output folders fail here, before a model takes time to load.
    resolve_benchmarks(settings)
    if args.adapter:
        check_adapter_folder(args.adapter)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, adapter=args.adapter, trust_remote_code=args.trust_remote_code)
    summary = evaluate(model, settings, args.output)
    sys.stdout.write(Path(args.output, "summary.md").read_text(encoding="utf-8"))
    logger.info("wrote %s in %.0f s", args.output, summary["wall_time_s"])
    return 0


def _register_run(subparsers) -> None:
    parser = subparsers.add_parser("run", help="train every method of a config, evaluate them all and write one report")
    parser.add_argument("config", help="experiment config (YAML), for example configs/quick.yaml")
    parser.add_argument("--output", "-o", required=True, type=output_folder,
                        help="run folder; a stopped run continues where it stopped")
    parser.add_argument("--data-dir", help="benchmark data folder (default: the config's, else $MOSR_DATA_DIR or ../shared/data)")
    parser.set_defaults(func=_run_study)


def _run_study(args) -> int:
    from mosr.experiment import run_study

    paths = run_study(args.config, args.output, data_dir=args.data_dir)
    sys.stdout.write(Path(paths["markdown"]).read_text(encoding="utf-8"))
    return 0


def _register_download(subparsers) -> None:
    parser = subparsers.add_parser("download-data", help="download the benchmark data into a folder (needs network)")
    parser.add_argument("destination", help="folder to write the data to, in the layout mosr reads")
    parser.add_argument("--overwrite", action="store_true", help="download files that are already there again")
    parser.set_defaults(func=_run_download)


def _run_download(args) -> int:
    from mosr.data.download import download_data

    written = download_data(args.destination, overwrite=args.overwrite)
    logger.info("downloaded %d files into %s", len(written), args.destination)
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other mosr error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mosr", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mosr {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _register_evaluate(subparsers)
    _register_run(subparsers)
    _register_download(subparsers)
    from mosr.analysis.command import register as register_analyze

    register_analyze(subparsers)
    from mosr.judges.command import register as register_judge

    register_judge(subparsers)
    from mosr.defenses.command import register as register_train

    register_train(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Model downloads are the user's choice; mosr itself never needs the hub once files are local.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft calls a deprecated transformers method on every adapter load, and the user cannot act on that warning.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        return args.func(args)
    except MosrError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    except OSError as error:
        # Folders that cannot be written (a file in the way, no permission, a full disk) are the user's to fix.
        where = f": {error.filename}" if error.filename else ""
        sys.stderr.write(f"error: {error.strerror or error}{where}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished work is saved; run the same command again to continue\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
