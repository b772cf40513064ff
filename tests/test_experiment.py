"""The `mosr run` study: config checks, sweeps, stage caching and the report."""

import json
from pathlib import Path

import pytest

from mosr.errors import MosrError
from mosr.experiment import expand_methods, load_config, run_study
from mosr.report import ReportEntry, write_report

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason="benchmark data folder not present")


def test_sweep_expands_one_entry_per_value():
    specs = expand_methods([{"name": "mosr-tau", "method": "mosr", "options": {"overlap": {"temperature": [0.05, 0.2]}}}])
    assert [spec.name for spec in specs] == ["mosr-tau temperature=0.05", "mosr-tau temperature=0.2"]
    assert [spec.options["overlap"]["temperature"] for spec in specs] == [0.05, 0.2]
    assert {spec.group for spec in specs} == {"sweep"}


def test_layer_lists_are_not_sweeps():
    specs = expand_methods([{"name": "cb", "method": "circuit-breakers", "training": {"loss_layers": [10, 20]}}])
    assert len(specs) == 1


def test_two_sweeps_in_one_entry_is_error():
    with pytest.raises(MosrError, match="one setting per entry"):
        expand_methods([{"name": "m", "options": {"a": [1, 2], "b": [3, 4]}}])


def test_duplicate_method_names_is_error():
    with pytest.raises(MosrError, match="unique"):
        expand_methods(["sft", "sft"])


@pytest.mark.parametrize(
    "text,message",
    [("- a\n- b\n", "mapping"), ("evaluation: {benchmarks: []}\n", "evaluation.benchmarks"),
     ("modle: x\nevaluation: {benchmarks: [oktest]}\n", "unknown keys modle"),
     ("a: [\n", "not valid YAML at line 2, column 1"),
     ("evaluation: [xstest]\n", "`evaluation` must be a mapping"),
     ("seed: abc\nevaluation: {benchmarks: [oktest]}\nmethods: [sft]\n", "`seed` must be a whole number"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: sft\n", "`methods` must be a list"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [sft]\ntraining: {nosuch: 1}\n", "unknown training setting"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [sft]\ntraining: {steps: 0}\n", "steps must be a positive"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [sft]\ntraining_set: {nosuch: 3}\n", "unknown `training_set`"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [sft]\nanalysis: {nosuch: 3}\n", "unknown `analysis`"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [1]\n", "a method entry must be a name or a mapping"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [{name: sft, options: [1]}]\n", "`options` must be a mapping"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [{name: [a]}]\n", "needs a `name`"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [{name: sft, options: {refusal_weight: abc}}]\n",
      "invalid options for sft"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [sft]\ntraining_set: {max_new_tokens: abc}\n",
      "`training_set.max_new_tokens` must be a whole number"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [sft]\nutility: {max_prompts: abc}\n", "`utility.max_prompts`"),
     ("evaluation: {benchmarks: [oktest]}\nmethods: [sft]\nanalysis: {enabled: 'no'}\n", "true or false")],
)
def test_bad_config_is_error(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(MosrError, match=message):
        load_config(path)


@pytest.mark.parametrize("name", ["quick.yaml", "smollm2-full.yaml", "llama3-8b.yaml", "mistral-7b.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.methods
    assert {"circuit-breakers", "repbend", "sft", "mosr"} <= {spec.method for spec in config.methods}


def test_untyped_evaluation_setting_is_error(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("evaluation: {benchmarks: [oktest], limit: abc}\nmethods: [sft]\n")
    with pytest.raises(MosrError, match="`limit` must be a positive whole number"):
        run_study(config, tmp_path / "run")


@needs_data
@pytest.mark.parametrize("evaluation, message", [
    ("{benchmarks: [nosuch]}", "unknown evaluation data set"),
    ("{benchmarks: [oktest], attacks: [prefill]}", "attacks run on harmful requests"),
    ("{benchmarks: [oktest]}", "utility.benchmark 'harmless' is not among"),
])
def test_bad_benchmarks_stop_before_run_folder(tmp_path, evaluation, message):
    config = tmp_path / "config.yaml"
    config.write_text(f"evaluation: {evaluation}\nmethods: [sft]\n")
    with pytest.raises(MosrError, match=message):
        run_study(config, tmp_path / "run", data_dir=str(DATA_DIR))
    assert not (tmp_path / "run").exists()


def test_unknown_attack_stops_before_run_folder(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("evaluation: {benchmarks: [harmbench], attacks: [gcg]}\nmethods: [{name: sft}]\n")
    with pytest.raises(MosrError, match="unknown attack 'gcg'"):
        run_study(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_report_files(tmp_path):
    def summary(asr, over):
        def rate(value):
            return {"rate": value, "count": int(value * 10), "total": 10, "invalid": 0, "ci_low": value / 2, "ci_high": min(1, value * 1.5)}
        return {"benchmarks": {"harmbench": {"rates": {"attack_success_rate": rate(asr)}},
                               "xstest-safe": {"rates": {"over_refusal_rate": rate(over)},
                                               "per_category": {"homonyms": {"over_refusal_rate": rate(over)}}}}}

    entries = [ReportEntry("base model", summary(0.8, 0.1), group="base"),
               ReportEntry("mosr", summary(0.2, 0.2), training_time_s=120, kl_to_base=0.05)]
    paths = write_report(entries, tmp_path)
    markdown = paths["markdown"].read_text()
    assert "| mosr | 20.0% (2/10) [10.0, 30.0] | 20.0% (2/10) [10.0, 30.0] | 0.0500 | 2.0 min |" in markdown
    assert "homonyms" in markdown
    assert paths["plot"].stat().st_size > 1000
    assert "<table>" in paths["html"].read_text()
    # With 10 prompts per benchmark, the report warns that the table ranks nothing.
    assert "as few as 10): intervals are up to 60 points wide" in markdown


@needs_data
def test_study_runs_and_caches(tmp_path, tiny_model_dir, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"""
name: tiny
model: {tiny_model_dir}
evaluation: {{benchmarks: [oktest, harmbench, harmless], limit: 3, max_new_tokens: 3, batch_size: 4}}
utility: {{max_prompts: 3}}
training_set: {{n_malicious: 0, n_augmented: 0, n_benign: 8, n_pseudo_malicious: 8, n_refusal: 8, max_new_tokens: 4}}
training: {{steps: 2, batch_size: 2, max_length: 64, checkpoint_every: 1}}
methods:
  - name: sft
  - name: sft-weight
    method: sft
    options: {{refusal_weight: [0.5, 1.0]}}
""")
    # A random tiny model writes mostly special tokens, which decode to empty completions that the
    # builder rightly drops and KL cannot use; every completion gets fixed harmless text instead.
    from mosr.data import training_set as training_set_module

    real_generate = training_set_module.generation.generate

    def fixed_completions(loaded, prompts, **kwargs):
        records = real_generate(loaded, prompts, **{**kwargs, "output_path": None})
        return [{**record, "response": "Here is a short, helpful answer.", "empty": False} for record in records]

    monkeypatch.setattr(training_set_module.generation, "generate", fixed_completions)
    monkeypatch.setattr("mosr.evaluate.generate", fixed_completions)
    paths = run_study(config, tmp_path / "run", data_dir=str(DATA_DIR))
    monkeypatch.setattr(training_set_module.generation, "generate", real_generate)
    markdown = paths["markdown"].read_text()
    for name in ("base model", "| sft |", "sft-weight refusal_weight=0.5", "sft-weight refusal_weight=1.0"):
        assert name in markdown
    assert "- [base model](../base/eval/samples/)" in markdown
    assert (tmp_path / "run" / "report" / "../base/eval/samples").is_dir()
    # refusal_weight=1.0 is sft's default, so that sweep value reuses the plain sft stage.
    stages = sorted(p.parent.name for p in (tmp_path / "run" / "methods").glob("*/stage.json"))
    assert len(stages) == 2
    result = json.loads(next((tmp_path / "run" / "methods").glob("sft-*/stage.json")).read_text())["result"]
    assert result["kl_to_base"] is not None and result["kl_to_base"] >= 0

    # A second run reuses every stage: nothing trains or evaluates again.
    import mosr.experiment as experiment

    def fail(*args, **kwargs):
        raise AssertionError("a cached stage ran again")

    monkeypatch.setattr(experiment, "evaluate", fail)
    monkeypatch.setattr("mosr.defenses.trainer.train", fail)
    run_study(config, tmp_path / "run", data_dir=str(DATA_DIR))

    # A checkout that keeps results but not adapter weights, stopped during the evaluation of a
    # method: that method trains again and its partial evaluation, made with the lost weights, goes.
    monkeypatch.undo()
    monkeypatch.setattr("mosr.evaluate.generate", fixed_completions)
    folder = next((tmp_path / "run" / "methods").glob("sft-*"))
    (folder / "stage.json").unlink()
    (folder / "train" / "adapter_model.safetensors").unlink()
    stale = folder / "eval" / "stale.txt"
    stale.write_text("made with the lost adapter")
    run_study(config, tmp_path / "run", data_dir=str(DATA_DIR))
    assert (folder / "train" / "adapter_model.safetensors").is_file()
    assert (folder / "stage.json").is_file()
    assert not stale.exists()
