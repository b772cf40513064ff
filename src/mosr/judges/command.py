"""The `mosr judge` subcommand: label the responses of a CSV/JSONL/JSON file as refusals or harmful compliance."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from mosr.errors import MosrError

logger = logging.getLogger(__name__)

OUTPUT_SUFFIX = ".judged.jsonl"


def register(subparsers) -> None:
    """Add the `judge` subcommand to the `mosr` subparsers."""
    from mosr.cli import positive_int
    from mosr.judges import JUDGE_KINDS
    from mosr.judges.model_judge import FAMILIES

    parser = subparsers.add_parser(
        "judge",
        help="label each response of a file as a refusal (refusal) or as harmful compliance (harm)",
        description="Judge every (prompt, response) row of a CSV, JSONL or JSON file and write the rows, in input "
                    "order, as JSONL with the label (true, false, or null when a model-based judge gave no valid "
                    "verdict) and the verdict kind added.",
    )
    parser.add_argument("kind", choices=JUDGE_KINDS, help="refusal: did the model refuse? harm: did it comply with a "
                                                          "harmful request in substance?")
    parser.add_argument("file", metavar="FILE", help="CSV (with a header row), JSONL or JSON file of rows")
    parser.add_argument("--prompt-column", default="prompt", help="column of the requests (default: prompt)")
    parser.add_argument("--response-column", default="response", help="column of the responses (default: response)")
    parser.add_argument("-o", "--output", metavar="OUT.jsonl",
                        help=f"output file (default: FILE with the suffix {OUTPUT_SUFFIX}, beside it)")
    parser.add_argument("--judge", metavar="NAME",
                        help="Hugging Face id or local folder of a model-based judge (default: the rule-based judge)")
    parser.add_argument("--judge-family", choices=sorted(FAMILIES),
                        help="prompt format of the model-based judge, when it cannot be detected from the name")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="pairs a model-based judge classifies together (default: 8)")
    parser.set_defaults(func=run_judge)


def default_output_path(file: str | Path) -> Path:
    """FILE with its suffix replaced by `.judged.jsonl`, in the same folder."""
    file = Path(file)
    return file.with_name(file.stem + OUTPUT_SUFFIX)


def run_judge(args) -> int:
    """Judge the rows of `args.file` and write them with their verdicts; return the exit status."""
    from mosr.data.files import column_values, read_records
    from mosr.judges import get_judge

    rows = read_records(args.file)
    prompts = column_values(rows, args.prompt_column, args.file)
    responses = column_values(rows, args.response_column, args.file)
    output = Path(args.output) if args.output else default_output_path(args.file)
    if output.resolve() == Path(args.file).resolve():
        raise MosrError(f"the output file {output} is the input file: choose another with -o")

    settings = {}
    if args.judge:
        settings["batch_size"] = args.batch_size
        if args.judge_family:
            settings["family"] = args.judge_family
    elif args.judge_family:
        raise MosrError("--judge-family needs --judge (a model-based judge)")
    judge = get_judge(args.kind, args.judge, **settings)

    verdicts = judge.judge(prompts, responses)
    label_field = judge.label_name
    kind_field = "refusal_kind" if args.kind == "refusal" else "harm_kind"
    judged = [{**row, label_field: verdict.label, kind_field: verdict.kind} for row, verdict in zip(rows, verdicts)]
    write_jsonl(output, judged)

    labels = Counter(verdict.label for verdict in verdicts)
    kinds = Counter(verdict.kind for verdict in verdicts)
    logger.info(
        "judged %d rows of %s with %s: %d %s, %d not, %d invalid (kinds: %s); wrote %s",
        len(verdicts), args.file, judge.name, labels[True], label_field, labels[False], labels[None],
        ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())), output,
    )
    return 0


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSON lines through a temporary file, so that a failed write leaves no partial output."""
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(partial, path)
    except OSError as error:
        raise MosrError(f"could not write {path}: {error.strerror or error}") from None
