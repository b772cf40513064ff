import json
import shutil
from pathlib import Path

import pytest

from mosr.data import load_dataset, load_prompt_file, expand_names
from mosr.data.download import FILES, SOURCES, download_data
from mosr.judges.agreement import load_llamaguard_completions
from mosr.errors import MosrError

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason="benchmark data folder not present")


@needs_data
@pytest.mark.parametrize(
    "name,count",
    [("xstest-safe", 250), ("xstest-unsafe", 200), ("oktest", 300), ("harmbench", 159), ("jailbreakbench", 100)],
)
def test_benchmark_sizes(name, count):
    samples = load_dataset(name, DATA_DIR)
    assert len(samples) == count
    assert all(sample.prompt == sample.prompt.strip() and sample.prompt for sample in samples)


@needs_data
def test_xstest_halves_apart():
    safe = load_dataset("xstest-safe", DATA_DIR)
    unsafe = load_dataset("xstest-unsafe", DATA_DIR)
    assert {s.label for s in safe} == {"safe"}
    assert all(s.category.startswith("contrast_") for s in unsafe)
    assert expand_names(["xstest"]) == ["xstest-safe", "xstest-unsafe"]


@needs_data
def test_limit_is_seeded_subset():
    first = load_dataset("oktest", DATA_DIR, limit=10, seed=1)
    again = load_dataset("oktest", DATA_DIR, limit=10, seed=1)
    assert [s.id for s in first] == [s.id for s in again]
    assert len(first) == 10
    assert [int(s.id) for s in first] == sorted(int(s.id) for s in first)


def test_unknown_benchmark_is_error():
    with pytest.raises(MosrError, match="unknown evaluation data set"):
        expand_names(["xstst"])
    with pytest.raises(MosrError, match="unknown evaluation data set"):
        expand_names(["harmful_train"])


@pytest.mark.parametrize("limit", [0, -3])
def test_bad_limit_is_error(limit):
    with pytest.raises(MosrError, match="--limit"):
        load_dataset("oktest", DATA_DIR, limit=limit)


def test_missing_data_folder_is_error(tmp_path):
    with pytest.raises(MosrError, match="data folder not found"):
        load_dataset("oktest", tmp_path / "nowhere")
    with pytest.raises(MosrError, match="not found"):
        load_dataset("oktest", tmp_path)


def test_user_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "prompts.csv"
    csv_path.write_text("id,text\n1,How do I whittle a knife?\n2,What is a bomb calorimeter?\n")
    samples = load_prompt_file(csv_path, "text")
    assert [s.prompt for s in samples] == ["How do I whittle a knife?", "What is a bomb calorimeter?"]
    jsonl_path = tmp_path / "prompts.jsonl"
    jsonl_path.write_text(json.dumps({"prompt": "hi"}) + "\n\n" + json.dumps({"prompt": "bye"}) + "\n")
    assert len(load_prompt_file(jsonl_path)) == 2


def test_user_file_errors(tmp_path):
    csv_path = tmp_path / "prompts.csv"
    csv_path.write_text("id,text\n1,hello\n")
    with pytest.raises(MosrError, match="no column 'prompt'"):
        load_prompt_file(csv_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt\n")
    with pytest.raises(MosrError, match="contains no rows"):
        load_prompt_file(empty)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"prompt\n\xff\xfe\x00bad\n")
    with pytest.raises(MosrError, match="not valid UTF-8"):
        load_prompt_file(binary)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "hi"}\n{"prompt": \n')
    with pytest.raises(MosrError, match="line 2: invalid JSON"):
        load_prompt_file(broken)
    with pytest.raises(MosrError, match="not found"):
        load_prompt_file(tmp_path / "absent.csv")


@needs_data
def test_download_from_local_mirror(tmp_path):
    # A mirror laid out like the source repositories, built from the local copy of each file.
    mirror = tmp_path / "mirror"
    for local_path, (source, remote_path) in FILES.items():
        target = mirror / source / remote_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA_DIR / local_path, target)
    sources = {source: (mirror / source).as_uri() for source in {source for source, _ in FILES.values()}}

    written = download_data(tmp_path / "data", sources=sources)
    assert len(written) == len(FILES)
    assert len(load_dataset("harmbench", tmp_path / "data")) == 159
    assert len(load_llamaguard_completions(tmp_path / "data")) == 9
    assert download_data(tmp_path / "data", sources=sources) == []


def test_download_failure_is_error(tmp_path):
    sources = {name: (tmp_path / "missing").as_uri() for name in SOURCES}
    with pytest.raises(MosrError, match="download of"):
        download_data(tmp_path / "data", sources=sources)
    assert not list((tmp_path / "data").rglob("*.partial"))


def test_per_benchmark_limits_override_limit():
    from mosr.evaluate import EvaluationSettings, resolve_benchmarks

    settings = EvaluationSettings(benchmarks=["xstest", "harmless"], limit=5, limits={"harmless": 3, "xstest-unsafe": 2},
                                  data_dir=DATA_DIR)
    sizes = {benchmark.name: len(benchmark.samples) for benchmark in resolve_benchmarks(settings)}
    assert sizes == {"xstest-safe": 5, "xstest-unsafe": 2, "harmless": 3}


@pytest.mark.parametrize("limits, message", [({"advbench": 3}, "not among the benchmarks"),
                                             ({"harmless": 0}, "positive number")])
def test_bad_per_benchmark_limits_are_errors(limits, message):
    from mosr.evaluate import EvaluationSettings, resolve_benchmarks

    with pytest.raises(MosrError, match=message):
        resolve_benchmarks(EvaluationSettings(benchmarks=["harmless"], limits=limits, data_dir=DATA_DIR))
