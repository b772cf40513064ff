"""Download the benchmark data from the original repositories into the layout mosr reads.

For users who are online. Every file keeps its original name and format, so the result is the
same folder layout as the data README describes. Tests exercise this code with file:// URLs.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from mosr.errors import MosrError

logger = logging.getLogger(__name__)

XSTEST_BASE = "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/main"
OKTEST_BASE = "https://raw.githubusercontent.com/InvokerStark/OverKill/main"
REFUSAL_DIRECTION_BASE = "https://raw.githubusercontent.com/andyrdt/refusal_direction/main/dataset"
# The refusal_direction pipeline's own runs hold the Llama Guard 2 verdicts that judge benchmarks use.
REFUSAL_DIRECTION_RUNS_BASE = "https://raw.githubusercontent.com/andyrdt/refusal_direction/main/pipeline/runs"

# Local path in the data folder -> (source, path inside the source repository).
SOURCES = {"xstest": XSTEST_BASE, "oktest": OKTEST_BASE, "refusal_direction": REFUSAL_DIRECTION_BASE,
           "refusal_direction_runs": REFUSAL_DIRECTION_RUNS_BASE}
FILES = {
    "xstest/xstest_prompts.csv": ("xstest", "xstest_prompts.csv"),
    **{
        f"xstest/labeled_completions/{model}.csv": ("xstest", f"model_completions/xstest_v2_completions_{model}.csv")
        for model in ("gpt4", "llama2new", "mistralguard")
    },
    **{
        f"judge_llamaguard2/{model}_{condition}.json":
            ("refusal_direction_runs", f"{model}/completions/jailbreakbench_{condition}_evaluations.json")
        for model in ("gemma-2b-it", "llama-2-7b-chat-hf", "qwen-1_8b-chat")
        for condition in ("baseline", "ablation", "actadd")
    },
    "oktest/OKTest.csv": ("oktest", "OKTest.csv"),
    "oktest/OKTest_heldout.csv": ("oktest", "OKTest_heldout.csv"),
    **{
        f"refusal_direction/splits/{split}.json": ("refusal_direction", f"splits/{split}.json")
        for split in ("harmful_train", "harmful_val", "harmful_test", "harmless_train", "harmless_val", "harmless_test")
    },
    **{
        f"refusal_direction/processed/{name}.json": ("refusal_direction", f"processed/{name}.json")
        for name in ("advbench", "harmbench_test", "harmbench_val", "jailbreakbench", "strongreject")
    },
}


def download_data(destination: str | Path, *, sources: dict[str, str] | None = None, overwrite: bool = False) -> list[Path]:
    """Fetch every benchmark file into `destination`, skipping files that are already there."""
    destination = Path(destination)
    bases = {**SOURCES, **(sources or {})}
    written = []
    for local_path, (source, remote_path) in tqdm(FILES.items(), desc="downloading data", unit="file"):
        target = destination / local_path
        if target.is_file() and not overwrite:
            continue
        url = f"{bases[source].rstrip('/')}/{remote_path}"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
                shutil.copyfileobj(response, handle)
        except (urllib.error.URLError, OSError) as error:
            partial.unlink(missing_ok=True)
            raise MosrError(f"download of {url} failed: {error}") from None
        partial.rename(target)
        written.append(target)
        logger.info("downloaded %s", target)
    return written
