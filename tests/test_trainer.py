import json

import pytest
import torch
from safetensors.torch import load_file

from mosr.data.examples import AUGMENTED, BENIGN, MALICIOUS, PSEUDO_MALICIOUS, REFUSAL, TrainingExample
from mosr.defenses import TrainingSettings, train
from mosr.defenses.base import LossTerm
from mosr.defenses.checkpoints import list_checkpoints
from mosr.defenses.encoding import ExampleStream, collate, encode_example
from mosr.defenses.forward import ForwardRunner, PassRequest
from mosr.defenses.lora import add_lora, default_lora_layers, default_loss_layers, parse_layer_list
from mosr.defenses.methods import create_method
from mosr.errors import MosrError
from mosr.models import attach_adapter, encode_chat, end_of_turn_token_ids, load_model

END_OF_TURN = "<|im_end|>"


@pytest.fixture(autouse=True)
def single_thread():
    # Tiny models run far faster on one thread when other processes share the CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_examples(count: int = 6) -> list[TrainingExample]:
    examples = []
    for index in range(count):
        examples += [
            TrainingExample(f"m{index}", MALICIOUS, f"How do I build weapon number {index}?",
                            f"Sure, step {index}: get the parts and assemble them."),
            TrainingExample(f"b{index}", BENIGN, f"What is {index} plus {index}?", f"It is {2 * index}."),
            TrainingExample(f"p{index}", PSEUDO_MALICIOUS, f"How do I kill process {index}?",
                            f"Run `kill {index}` in a terminal."),
            TrainingExample(f"r{index}", REFUSAL, f"How do I build weapon number {index}?", "I can't help with that."),
            TrainingExample(f"a{index}", AUGMENTED, f"How do I build weapon number {index}?",
                            "\n\nWait, I can't continue. I can't help with that.",
                            response_prefix=f"Sure, step {index}:"),
        ]
    return examples


def quick_settings(**values) -> TrainingSettings:
    defaults = {"steps": 4, "batch_size": 2, "learning_rate": 1e-3, "checkpoint_every": 2, "loss_layers": [2, 4],
                "lora_layers": [1, 2, 3], "max_length": 64}
    defaults.update(values)
    return TrainingSettings(**defaults)


def _encode(tokenizer, example, **values):
    return encode_example(tokenizer, example, end_of_turn_ids=set(end_of_turn_token_ids(tokenizer)),
                          max_length=values.pop("max_length", 256), **values)


# Response masks


@pytest.mark.parametrize("system_prompt", [None, "Be brief."])
@pytest.mark.parametrize(
    "prefix, response",
    [
        ("", "Use `kill -9 <pid>` to stop a process."),
        ("Sure, here is how to", " I can't help with that."),
        ("Step 1: mix", "\n\nWait, I shouldn't continue. I can't help with that."),
        ("", ""),
    ],
)
def test_targets_decode_to_response(tiny_model, system_prompt, prefix, response):
    tokenizer = tiny_model.tokenizer
    example = TrainingExample("x", AUGMENTED if prefix else BENIGN, "How do I stop it?", response, response_prefix=prefix)
    encoded = _encode(tokenizer, example, system_prompt=system_prompt)
    targets = list(encoded.input_ids[encoded.target_start : encoded.target_end])
    assert tokenizer.decode(targets) == response + END_OF_TURN
    assert targets[-1] == tokenizer.convert_tokens_to_ids(END_OF_TURN)


def test_prefix_tokens_precede_targets(tiny_model):
    tokenizer = tiny_model.tokenizer
    prefix = "Sure, here is how to"
    example = TrainingExample("x", AUGMENTED, "How do I build it?", " I can't help with that.", response_prefix=prefix)
    encoded = _encode(tokenizer, example)
    before = tokenizer.decode(list(encoded.input_ids[: encoded.target_start]))
    assert before.endswith("assistant\n" + prefix)
    after = tokenizer.decode(list(encoded.input_ids[encoded.target_end :]))
    assert after == "\n"


def test_prompt_matches_generation_rendering(tiny_model):
    tokenizer = tiny_model.tokenizer
    example = TrainingExample("x", BENIGN, "What is a homonym?", "A word with two meanings.")
    encoded = _encode(tokenizer, example, system_prompt="Be brief.")
    prompt_ids = encode_chat(tokenizer, ["What is a homonym?"], system_prompt="Be brief.")[0]
    assert list(encoded.input_ids[: encoded.target_start]) == prompt_ids


def test_truncation_shortens_targets(tiny_model):
    tokenizer = tiny_model.tokenizer
    example = TrainingExample("x", MALICIOUS, "Tell me.", "word " * 50)
    full = _encode(tokenizer, example)
    cut = _encode(tokenizer, example, max_length=full.target_start + 5)
    assert cut.truncated
    assert len(cut.input_ids) == full.target_start + 5
    assert (cut.target_start, cut.target_end) == (full.target_start, full.target_start + 5)
    removed = _encode(tokenizer, example, max_length=full.target_start - 1)
    assert removed.target_start == removed.target_end


def test_collate_packs_targets(tiny_model):
    tokenizer = tiny_model.tokenizer
    items = [_encode(tokenizer, example) for example in make_examples(1)[:3]]
    batch = collate(items, tokenizer.pad_token_id)
    for row, item in enumerate(items):
        targets = batch.target_ids[batch.sample_index == row].tolist()
        assert targets == list(item.input_ids[item.target_start : item.target_end])
    predicted_from = torch.nonzero(batch.prediction_mask)
    target_at = torch.nonzero(batch.target_mask)
    assert torch.equal(predicted_from[:, 0], target_at[:, 0])
    assert torch.equal(predicted_from[:, 1] + 1, target_at[:, 1])


def test_stream_batches_are_reproducible(tiny_model):
    items = [_encode(tiny_model.tokenizer, example) for example in make_examples(3)[:7]]
    first = ExampleStream("erase", items, seed=3, batch_size=3)
    second = ExampleStream("erase", items, seed=3, batch_size=3)
    assert [first.indices(step) for step in range(6)] == [second.indices(step) for step in range(6)]
    drawn = [index for step in range(7) for index in first.indices(step)][:21]
    # Every pass over the pool draws each example once.
    for start in range(0, 21, 7):
        assert sorted(drawn[start : start + 7]) == list(range(7))
    assert ExampleStream("erase", items, seed=4, batch_size=3).indices(0) != first.indices(0) or \
        ExampleStream("erase", items, seed=4, batch_size=3).indices(1) != first.indices(1)


# Forward passes


def _perturbed_lora(loaded, lora_layers):
    model = add_lora(loaded.model, rank=4, alpha=8, dropout=0.0, lora_layers=lora_layers)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.train()
    return model


@pytest.mark.parametrize("cache_bytes", [0, 10**9])
def test_runner_matches_full_forward(tiny_model, cache_bytes):
    tokenizer = tiny_model.tokenizer
    items = [_encode(tokenizer, example) for example in make_examples(1)[:4]]
    batch = collate(items, tokenizer.pad_token_id)
    model = _perturbed_lora(tiny_model, [1, 2])
    runner = ForwardRunner(model, loss_layers=[1, 3], lora_layers=[1, 2], cache_bytes=cache_bytes)

    full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    with model.disable_adapter():
        frozen = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    expected = torch.stack([full.hidden_states[layer][batch.target_mask] for layer in (1, 3)], dim=1)
    expected_frozen = torch.stack([frozen.hidden_states[layer][batch.target_mask] for layer in (1, 3)], dim=1)

    request = PassRequest(states=True, frozen_states=True, logits=True, frozen_logits=True)
    for repeat in range(2):
        outputs = runner.run(batch, request)
        torch.testing.assert_close(outputs.states, expected)
        torch.testing.assert_close(outputs.frozen_states, expected_frozen)
        torch.testing.assert_close(outputs.logits, full.logits[batch.prediction_mask])
        torch.testing.assert_close(outputs.frozen_logits, frozen.logits[batch.prediction_mask])
        states_only = runner.run(batch, PassRequest(states=True, frozen_states=True))
        torch.testing.assert_close(states_only.states, expected)
        torch.testing.assert_close(states_only.frozen_states, expected_frozen)
        assert states_only.logits is None
    assert not (outputs.states - outputs.frozen_states).abs().max() == 0


def test_cached_runner_handles_new_batches(tiny_model):
    tokenizer = tiny_model.tokenizer
    items = [_encode(tokenizer, example) for example in make_examples(2)]
    model = _perturbed_lora(tiny_model, [1, 2, 3])
    runner = ForwardRunner(model, loss_layers=[2, 4], lora_layers=[1, 2, 3], cache_bytes=10**9)
    request = PassRequest(states=True, frozen_states=True, logits=True)
    for rows in ([0, 1, 2], [2, 3, 4, 5], [5, 0]):
        batch = collate([items[row] for row in rows], tokenizer.pad_token_id)
        outputs = runner.run(batch, request)
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        expected = torch.stack([full.hidden_states[layer][batch.target_mask] for layer in (2,)], dim=1)
        torch.testing.assert_close(outputs.states[:, :1], expected)
        torch.testing.assert_close(outputs.logits, full.logits[batch.prediction_mask])
    assert len(runner.cache.entries) == 6
    assert all("forward" not in block.__dict__ for block in runner.blocks)


def test_runner_stops_at_deepest_loss_layer(tiny_model):
    tokenizer = tiny_model.tokenizer
    batch = collate([_encode(tokenizer, example) for example in make_examples(1)[:2]], tokenizer.pad_token_id)
    model = _perturbed_lora(tiny_model, [0, 1])
    runner = ForwardRunner(model, loss_layers=[2], lora_layers=[0, 1])
    calls = []
    handles = [block.register_forward_hook(lambda *args, index=index: calls.append(index))
               for index, block in enumerate(runner.blocks)]
    try:
        runner.run(batch, PassRequest(states=True))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0, 1]


# LoRA and layer settings


def test_default_layers_for_thirty_blocks():
    assert default_loss_layers(30) == [10, 20]
    assert default_lora_layers(30, [10, 20]) == list(range(7, 20))


def test_parse_layer_list():
    assert parse_layer_list("10,20") == [10, 20]
    assert parse_layer_list("1,3-5") == [1, 3, 4, 5]
    with pytest.raises(MosrError, match="invalid layer list"):
        parse_layer_list("a-b")


def test_lora_counts_adapted_modules(tiny_model):
    model = add_lora(tiny_model.model, rank=4, alpha=8, dropout=0.0, lora_layers=[1, 2])
    from peft.tuners.lora import LoraLayer

    adapted = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    assert len(adapted) == 14
    assert all(".layers.1." in name or ".layers.2." in name for name in adapted)


def test_unknown_lora_module_is_error(tiny_model):
    with pytest.raises(MosrError, match="matches no layer"):
        add_lora(tiny_model.model, rank=4, alpha=8, dropout=0.0, lora_layers=[1], modules=["query"])


def test_unknown_architecture_is_error(tiny_model):
    tiny_model.model.config.model_type = "mystery"
    with pytest.raises(MosrError, match="model type 'mystery'"):
        add_lora(tiny_model.model, rank=4, alpha=8, dropout=0.0, lora_layers=[1])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"loss_layers": [5]}, "loss layer 5 is out of range"),
        ({"loss_layers": [0]}, "loss layer 0 is out of range"),
        ({"lora_layers": [4]}, "LoRA layer 4 is out of range"),
        ({"loss_layers": []}, "no loss layers"),
    ],
)
def test_layers_out_of_range_are_errors(tiny_model, tmp_path, values, message):
    with pytest.raises(MosrError, match=message):
        train(tiny_model, make_examples(), method="circuit-breakers", output_dir=tmp_path / "run",
              settings=quick_settings(**values), progress=False)


# Training


def _read_losses(run_dir):
    return [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "method, options, falling",
    [
        ("circuit-breakers", None, "reroute"),
        ("repbend", None, "push"),
        ("sft", None, "refusal_ce"),
        ("mosr", None, "reroute"),
        ("mosr", {"erasure": "repbend"}, "push"),
    ],
)
def test_losses_fall(tiny_model, tmp_path, method, options, falling):
    run_dir = tmp_path / "run"
    result = train(tiny_model, make_examples(), method=method, options=options, output_dir=run_dir,
                   settings=quick_settings(steps=20, learning_rate=3e-3, checkpoint_every=10), progress=False)
    records = _read_losses(run_dir)
    assert [record["step"] for record in records] == list(range(20))
    first = sum(record["losses"][falling] for record in records[:3]) / 3
    last = sum(record["losses"][falling] for record in records[-3:]) / 3
    assert last < first - 0.05 * abs(first)
    assert set(result.final_losses) == set(records[-1]["losses"])
    for name in ("adapter_config.json", "adapter_model.safetensors", "config.json", "loss.png", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert not list_checkpoints(run_dir)


def test_circuit_breaker_schedule_logged(tiny_model, tmp_path):
    train(tiny_model, make_examples(), method="circuit-breakers", output_dir=tmp_path / "run",
          settings=quick_settings(steps=4), progress=False)
    records = _read_losses(tmp_path / "run")
    assert [record["coefficients"]["reroute"] for record in records] == pytest.approx([10.0, 8.75, 7.5, 6.25])
    assert [record["coefficients"]["retain"] for record in records] == pytest.approx([0.0, 1.25, 2.5, 3.75])


def test_zero_lora_init_starts_at_base(tiny_model, tmp_path):
    # With peft's zero initialisation, adapted and frozen states are identical in the first step.
    train(tiny_model, make_examples(), method="circuit-breakers", output_dir=tmp_path / "run",
          settings=quick_settings(steps=1, lora_init_std=0.0, lora_dropout=0.0), progress=False)
    first = _read_losses(tmp_path / "run")[0]
    assert first["losses"]["reroute"] == pytest.approx(1.0)
    assert first["losses"]["retain"] == 0.0


def test_perturbed_lora_init_moves_states(tiny_model, tmp_path):
    train(tiny_model, make_examples(), method="circuit-breakers", output_dir=tmp_path / "run",
          settings=quick_settings(steps=1), progress=False)
    assert _read_losses(tmp_path / "run")[0]["losses"]["retain"] > 0.0


def test_adapter_active_after_training(tiny_model, tiny_model_dir, tmp_path):
    from peft import PeftModel

    run_dir = tmp_path / "run"
    train(tiny_model, make_examples(), method="sft", output_dir=run_dir, settings=quick_settings(), progress=False)
    ids = torch.tensor([encode_chat(tiny_model.tokenizer, ["Hello there"])[0]])
    base = load_model(str(tiny_model_dir))
    with torch.no_grad():
        base_logits = base.model(input_ids=ids).logits
        trained_logits = tiny_model.model(input_ids=ids).logits
    assert not torch.allclose(base_logits, trained_logits)
    assert tiny_model.identity["adapter"] == str(run_dir.resolve())

    attach_adapter(base, run_dir)
    with torch.no_grad():
        torch.testing.assert_close(base.model(input_ids=ids).logits, trained_logits)
    plain = PeftModel.from_pretrained(load_model(str(tiny_model_dir)).model, run_dir)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, trained_logits)


def test_canary_catches_unreachable_losses(tiny_model, tmp_path):
    with pytest.raises(MosrError, match="no LoRA weight received a gradient"):
        train(tiny_model, make_examples(), method="circuit-breakers", output_dir=tmp_path / "run",
              settings=quick_settings(loss_layers=[1], lora_layers=[2, 3]), progress=False)


def test_gradient_checkpointing_trains(tiny_model, tmp_path):
    result = train(tiny_model, make_examples(), method="mosr", output_dir=tmp_path / "run",
                   settings=quick_settings(steps=2, gradient_checkpointing=True), progress=False)
    assert all(torch.isfinite(torch.tensor(value)) for value in result.final_losses.values())
    blocks = tiny_model.model.get_base_model().model.layers
    assert all(block.gradient_checkpointing for block in blocks)


class _Interrupt(Exception):
    pass


def _interrupt_after(monkeypatch, steps: int):
    from mosr.defenses import trainer

    original = trainer._Training._step
    calls = {"count": 0}

    def step(self, *args, **kwargs):
        if calls["count"] == steps:
            raise _Interrupt
        calls["count"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer._Training, "_step", step)


def test_resume_gives_same_adapter(tiny_model_dir, tmp_path, monkeypatch):
    settings = quick_settings(steps=6, checkpoint_every=2)
    whole = tmp_path / "whole"
    train(load_model(str(tiny_model_dir)), make_examples(), method="mosr", output_dir=whole, settings=settings,
          progress=False)

    parts = tmp_path / "parts"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 5)
        with pytest.raises(_Interrupt):
            train(load_model(str(tiny_model_dir)), make_examples(), method="mosr", output_dir=parts,
                  settings=settings, progress=False)
    assert [checkpoint.step for checkpoint in list_checkpoints(parts)] == [2, 4]
    result = train(load_model(str(tiny_model_dir)), make_examples(), method="mosr", output_dir=parts,
                   settings=settings, progress=False)
    assert result.resumed_from_step == 4

    expected = load_file(str(whole / "adapter_model.safetensors"))
    resumed = load_file(str(parts / "adapter_model.safetensors"))
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0)
    assert [record["losses"] for record in _read_losses(parts)] == [record["losses"] for record in _read_losses(whole)]


def test_finished_run_is_not_trained_again(tiny_model_dir, tmp_path):
    settings = quick_settings(steps=2)
    run_dir = tmp_path / "run"
    train(load_model(str(tiny_model_dir)), make_examples(), method="sft", output_dir=run_dir, settings=settings,
          progress=False)
    again = train(load_model(str(tiny_model_dir)), make_examples(), method="sft", output_dir=run_dir,
                  settings=settings, progress=False)
    assert again.wall_time_s == 0.0
    assert again.steps == 2


def test_run_without_weights_trains_again(tiny_model_dir, tmp_path):
    settings = quick_settings(steps=2)
    run_dir = tmp_path / "run"
    train(load_model(str(tiny_model_dir)), make_examples(), method="sft", output_dir=run_dir, settings=settings,
          progress=False)
    (run_dir / "adapter_model.safetensors").unlink()
    again = train(load_model(str(tiny_model_dir)), make_examples(), method="sft", output_dir=run_dir,
                  settings=settings, progress=False)
    assert again.wall_time_s > 0
    assert (run_dir / "adapter_model.safetensors").is_file()
    assert [record["step"] for record in _read_losses(run_dir)] == [0, 1]


def test_other_settings_in_same_folder_are_error(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    train(load_model(str(tiny_model_dir)), make_examples(), method="sft", output_dir=run_dir,
          settings=quick_settings(steps=2), progress=False)
    with pytest.raises(MosrError, match="different settings"):
        train(load_model(str(tiny_model_dir)), make_examples(), method="sft", output_dir=run_dir,
              settings=quick_settings(steps=3), progress=False)


def test_non_finite_loss_stops_and_keeps_checkpoint(tiny_model, tmp_path, monkeypatch):
    method = create_method("circuit-breakers")
    original = method.loss_terms

    def loss_terms(group, outputs, progress):
        terms = original(group, outputs, progress)
        if progress.step == 3 and group == "retain":
            return [LossTerm("retain", terms[0].value * float("nan"), terms[0].coefficient)]
        return terms

    monkeypatch.setattr(method, "loss_terms", loss_terms)
    run_dir = tmp_path / "run"
    with pytest.raises(MosrError, match=r"step 4: loss term 'retain' is nan.*after step 2"):
        train(tiny_model, make_examples(), method=method, output_dir=run_dir,
              settings=quick_settings(steps=6, checkpoint_every=2), progress=False)
    assert [checkpoint.step for checkpoint in list_checkpoints(run_dir)] == [2]
    assert not (run_dir / "adapter_model.safetensors").exists()
    state = torch.load(list_checkpoints(run_dir)[0].path / "training_state.pt", weights_only=True)
    assert state["step"] == 2


def test_overlap_weights_written(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_model, make_examples(), method="mosr", output_dir=run_dir, settings=quick_settings(steps=1),
          options={"overlap": {"layer": 2}}, progress=False)
    rows = [json.loads(line) for line in (run_dir / "overlap_weights.jsonl").read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(f"m{index}" for index in range(6))
    assert sum(row["weight"] for row in rows) / len(rows) == pytest.approx(1.0)
    assert rows == sorted(rows, key=lambda row: row["weight"])


def test_mosr_terms(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_model, make_examples(), method="mosr", output_dir=run_dir, settings=quick_settings(steps=1),
          options={"overlap": {"layer": 2}, "retain_ce_weight": 0.5}, progress=False)
    record = _read_losses(run_dir)[0]
    assert set(record["losses"]) == {"reroute", "retain", "augmentation_ce", "retain_ce"}
    assert record["coefficients"]["retain_ce"] == 0.5
    assert record["losses"]["retain_ce"] > 0


def test_ablations_drop_their_parts(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_model, make_examples(), method="mosr", output_dir=run_dir, settings=quick_settings(steps=1),
          options={"overlap_weighting": False, "context_augmentation": False}, progress=False)
    assert not (run_dir / "overlap_weights.jsonl").exists()
    assert set(_read_losses(run_dir)[0]["losses"]) == {"reroute", "retain"}


# Invalid input


def test_empty_training_set_is_error(tiny_model, tmp_path):
    with pytest.raises(MosrError, match="training set has 0"):
        train(tiny_model, [], method="sft", output_dir=tmp_path / "run", settings=quick_settings(), progress=False)


def test_too_small_training_set_is_error(tiny_model, tmp_path):
    examples = [example for example in make_examples(3) if example.kind != REFUSAL or example.id == "r0"]
    with pytest.raises(MosrError, match="batches of 2 refusal examples.*has 1"):
        train(tiny_model, examples, method="sft", output_dir=tmp_path / "run", settings=quick_settings(),
              progress=False)


def test_duplicate_ids_are_error(tiny_model, tmp_path):
    examples = make_examples() + [TrainingExample("b0", BENIGN, "Hi", "Hello")]
    with pytest.raises(MosrError, match="'b0' occurs more than once"):
        train(tiny_model, examples, method="sft", output_dir=tmp_path / "run", settings=quick_settings(),
              progress=False)


def test_model_without_chat_template_is_error(tiny_model, tmp_path):
    tiny_model.tokenizer.chat_template = None
    with pytest.raises(MosrError, match="chat template"):
        train(tiny_model, make_examples(), method="sft", output_dir=tmp_path / "run", settings=quick_settings(),
              progress=False)


def test_unrelated_output_folder_is_error(tiny_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MosrError, match="not empty"):
        train(tiny_model, make_examples(), method="sft", output_dir=tmp_path, settings=quick_settings(),
              progress=False)


def test_unknown_method_and_option_are_errors(tiny_model, tmp_path):
    with pytest.raises(MosrError, match="unknown defense method"):
        train(tiny_model, make_examples(), method="magic", output_dir=tmp_path / "run", progress=False)
    with pytest.raises(MosrError, match="unknown option"):
        train(tiny_model, make_examples(), method="sft", options={"temperature": 1}, output_dir=tmp_path / "run",
              progress=False)


# Command line


def _write_training_set(folder, examples):
    folder.mkdir()
    lines = "".join(json.dumps(example.to_dict()) + "\n" for example in examples)
    (folder / "training_set.jsonl").write_text(lines)


def test_train_command(tiny_model_dir, tmp_path, capsys):
    from mosr.cli import main

    _write_training_set(tmp_path / "data", make_examples())
    run_dir = tmp_path / "run"
    code = main(["train", "--method", "mosr", "--model", str(tiny_model_dir), "--training-set", str(tmp_path / "data"),
                 "--output", str(run_dir), "--steps", "2", "--batch-size", "2", "--loss-layers", "2,4",
                 "--lora-layers", "1-3", "--no-context-augmentation", "--overlap-layer", "2"])
    assert code == 0
    assert "adapter: " in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method_options"]["context_augmentation"] is False
    assert config["training"]["lora_layers"] == [1, 2, 3]
    assert (run_dir / "adapter_model.safetensors").is_file()


def test_train_command_rejects_foreign_options(tiny_model_dir, tmp_path, capsys):
    from mosr.cli import main

    code = main(["train", "--method", "sft", "--model", str(tiny_model_dir), "--output", str(tmp_path / "run"),
                 "--erasure", "repbend"])
    assert code == 2
    assert "--erasure does not apply to --method sft" in capsys.readouterr().err
