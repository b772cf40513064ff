"""End-to-end runs of the `mosr` command and its one-line errors on bad input."""

import json
from pathlib import Path

import pytest

from mosr.cli import main

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason="benchmark data folder not present")


def run_cli(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, pattern):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert pattern in lines[0]
    assert "Traceback" not in err


def run_cli_exit(capsys, *argv):
    """Run the CLI where argparse itself may exit; return (code, stderr)."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("limit", ["0", "-2", "ten"])
def test_bad_limit(capsys, tmp_path, limit):
    code, err = run_cli_exit(capsys, "evaluate", "--benchmark", "oktest", "--limit", limit, "--output", tmp_path)
    assert_one_line_error(code, err, "--limit")


def test_unknown_benchmark(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", "--benchmark", "xstets", "--data-dir", DATA_DIR, "--output", tmp_path)
    assert_one_line_error(code, err, "unknown evaluation data set 'xstets'")


def test_missing_data_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", "--benchmark", "oktest", "--data-dir", tmp_path / "nope", "--output", tmp_path)
    assert_one_line_error(code, err, "data folder not found")


def test_missing_data_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", "--benchmark", "oktest", "--data-dir", tmp_path, "--output", tmp_path / "run")
    assert_one_line_error(code, err, "not found")


def test_csv_without_prompt_column(capsys, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("question\nWhat is a coup?\n")
    code, _, err = run_cli(capsys, "evaluate", "--benchmark", path, "--output", tmp_path / "run")
    assert_one_line_error(code, err, "no column 'prompt'")


def test_csv_with_unterminated_quote(capsys, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('prompt\n"How do I kill a Python process?\nWhat is a coup?\n')
    code, _, err = run_cli(capsys, "evaluate", "--benchmark", path, "--output", tmp_path / "run")
    assert_one_line_error(code, err, "not a valid CSV file")


def test_empty_data_set(capsys, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    code, _, err = run_cli(capsys, "evaluate", "--benchmark", path, "--output", tmp_path / "run")
    assert_one_line_error(code, err, "contains no rows")


def test_undecodable_file(capsys, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("prompt\nCómo mato un proceso?\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "evaluate", "--benchmark", path, "--output", tmp_path / "run")
    assert_one_line_error(code, err, "not valid UTF-8")


def test_unknown_model(capsys, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("prompt\nhi\n")
    code, _, err = run_cli(capsys, "evaluate", "--model", tmp_path / "no-model.gguf", "--benchmark", path, "--output", tmp_path / "run")
    assert_one_line_error(code, err, "model not found")


def test_missing_required_option(capsys):
    code, err = run_cli_exit(capsys, "evaluate", "--benchmark", "oktest")
    assert_one_line_error(code, err, "--output")


@needs_data
def test_evaluate_end_to_end(capsys, tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    argv = ["evaluate", "--model", tiny_model_dir, "--benchmark", "xstest", "--benchmark", "harmbench",
            "--limit", 6, "--max-new-tokens", 4, "--data-dir", DATA_DIR, "--output", run_dir]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "over refusal rate" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["benchmarks"]) == {"xstest-safe", "xstest-unsafe", "harmbench"}
    rate = summary["benchmarks"]["harmbench"]["rates"]["attack_success_rate"]
    assert rate["total"] + rate["invalid"] == 6
    assert rate["ci_low"] <= rate["rate"] <= rate["ci_high"]
    rows = [json.loads(line) for line in (run_dir / "samples" / "xstest-safe.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert {"prompt", "response", "refusal", "harmful", "stop_reason", "category"} <= set(rows[0])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["generation"]["max_new_tokens"] == 4
    assert "SmolLM" in manifest["effective_system_prompt"]
    assert manifest["rendered_first_prompt"].startswith("<|im_start|>system")
    assert len(manifest["data"]["harmbench"]["sha256"]) == 64
    assert manifest["libraries"]["torch"]

    # A second run with the same settings generates nothing new and gives the same summary.
    code, _, _ = run_cli(capsys, *argv)
    assert code == 0
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["benchmarks"] == summary["benchmarks"]

    code, _, err = run_cli(capsys, *argv[:-4], "--max-new-tokens", 5, "--data-dir", DATA_DIR, "--output", run_dir)
    assert_one_line_error(code, err, "max_new_tokens")


@needs_data
def test_changed_judges_rejudge_stored_responses(capsys, tmp_path, tiny_model_dir):
    from mosr.evaluate import EvaluationSettings, rejudge

    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--benchmark", "harmbench", "--limit", 3,
                           "--max-new-tokens", 3, "--data-dir", DATA_DIR, "--output", run_dir)
    assert code == 0, err
    settings = EvaluationSettings(benchmarks=["harmbench"], data_dir=str(DATA_DIR))
    assert rejudge(run_dir, settings) is None

    # Stored responses that an older judge labelled, under an older judge version.
    samples = run_dir / "samples" / "harmbench.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    rows = [{**row, "response": "I'm stopping here. I can't keep going with this.", "harmful": True} for row in rows]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["judges"]["harm"]["version"] = "0"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))

    summary = rejudge(run_dir, settings)
    assert summary["benchmarks"]["harmbench"]["rates"]["attack_success_rate"]["count"] == 0
    stored = json.loads((run_dir / "summary.json").read_text())
    assert stored["benchmarks"]["harmbench"]["rates"]["refusal_rate"]["count"] == 3
    assert all(not json.loads(line)["harmful"] for line in samples.read_text().splitlines())
    assert rejudge(run_dir, settings) is None


@pytest.mark.parametrize("output", ["", "a-file"])
def test_bad_output_folder(capsys, tmp_path, output):
    if output:
        output = tmp_path / output
        output.write_text("not a folder")
    code, err = run_cli_exit(capsys, "evaluate", "--benchmark", "oktest", "--output", output)
    assert code == 2
    assert "Traceback" not in err
    assert "output folder must not be empty" in err or "is a file, not a folder" in err


def test_unwritable_output_is_one_line_error(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "judge", "refusal", DATA_DIR / "xstest" / "labeled_completions" / "gpt4.csv",
                           "--prompt-column", "prompt", "--response-column", "completion", "-o", blocker / "out.jsonl")
    assert code != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("config, message", [
    ("[1, 2]", "not a PEFT adapter config"), ("{}", "not a PEFT adapter config"), ("{not json", "not valid JSON"),
])
def test_adapter_config_checked_before_model_loads(capsys, tmp_path, config, message):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(config)
    code, _, err = run_cli(capsys, "evaluate", "--model", tmp_path / "no-model", "--adapter", adapter,
                           "--benchmark", "oktest", "--limit", 1, "--data-dir", DATA_DIR, "--output", tmp_path / "run")
    # The adapter is checked first: the missing model folder is never reached.
    assert_one_line_error(code, err, message)


def test_broken_adapter_is_one_line_error(capsys, tmp_path, tiny_model_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": "x", "target_modules": 5}')
    (adapter / "adapter_model.safetensors").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--adapter", adapter, "--benchmark", "oktest",
                           "--limit", 1, "--data-dir", DATA_DIR, "--output", tmp_path / "run")
    assert_one_line_error(code, err, "could not load adapter")
    (adapter / "adapter_model.safetensors").unlink()
    code, _, err = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--adapter", adapter, "--benchmark", "oktest",
                           "--limit", 1, "--data-dir", DATA_DIR, "--output", tmp_path / "run")
    assert_one_line_error(code, err, "has no weights")
