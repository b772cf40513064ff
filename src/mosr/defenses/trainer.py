"""The LoRA trainer shared by every defense method.

`train` wraps the model in LoRA adapters and, at every step, draws one batch per example group
of the method. It runs only the forward passes that the method's losses need
(`mosr.defenses.forward`), sums `coefficient * value` over the loss terms and takes an AdamW step
on the adapter weights.

A run folder contains:
- `adapter_config.json`, `adapter_model.safetensors`: the trained adapter, a standard PEFT folder
  (written when training finishes);
- `config.json`: the method, its options, the resolved settings, the model and the training set;
- `losses.jsonl`: every loss term, its coefficient, the learning rate and the gradient norm at
  every step;
- `loss.png`: the loss terms over the steps;
- `summary.json`: written last, so its presence marks a finished run;
- `checkpoints/`: while training, the newest checkpoints (removed when training finishes);
- `overlap_weights.jsonl`: MOSR's per-sample erasure weights, when overlap weighting is on.

Running `train` again on the same folder with the same settings continues from the newest
checkpoint, and returns at once when the run has finished. A finished run whose adapter weights
are gone (a checkout that keeps results but not weights) is trained again from the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mosr.data.examples import KINDS, TrainingExample
from mosr.defenses.base import Method, PreparationContext, Progress
from mosr.defenses.checkpoints import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from mosr.defenses.encoding import ExampleStream, encode_examples
from mosr.defenses.forward import ForwardRunner
from mosr.defenses.lora import add_lora, lora_parameters
from mosr.defenses.methods import create_method
from mosr.defenses.settings import TrainingSettings
from mosr.errors import MosrError
from mosr.models import LoadedModel, end_of_turn_token_ids, has_chat_template

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LOSSES_FILE = "losses.jsonl"
PLOT_FILE = "loss.png"
SUMMARY_FILE = "summary.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
TRAINING_SET_DIR = "training_set"

# Identity fields of the model that a resumed run must share with the original one.
_MODEL_FIELDS = ("name", "source", "architecture", "num_layers", "hidden_size", "dtype", "chat_template_sha256")


@dataclass
class TrainingResult:
    """Outputs of a finished training run."""

    run_dir: Path
    adapter_dir: Path
    """Folder to pass to `mosr.models.attach_adapter` or `PeftModel.from_pretrained`."""
    method: str
    steps: int
    final_losses: dict[str, float]
    """Loss terms of the last step."""
    wall_time_s: float
    """Seconds spent training in this call (0 when the run had already finished)."""
    resumed_from_step: int | None = None
    step_times_s: list[float] = field(default_factory=list)


def examples_by_kind(training_set) -> dict[str, list[TrainingExample]]:
    """Group training examples by kind.

    Accepts a mapping of kind to examples, an iterable of `TrainingExample`, or an object with
    such a mapping or iterable in its `examples` attribute (a `TrainingSet`).
    """
    source = getattr(training_set, "examples", training_set)
    if isinstance(source, Mapping):
        items: Iterable = (example for examples in source.values() for example in examples)
    else:
        items = source
    grouped: dict[str, list[TrainingExample]] = {kind: [] for kind in KINDS}
    for example in items:
        if not isinstance(example, TrainingExample):
            raise MosrError(f"expected TrainingExample items in the training set, got {type(example).__name__}")
        grouped[example.kind].append(example)
    return grouped


def _fingerprint(examples: dict[str, list[TrainingExample]]) -> str:
    digest = hashlib.sha256()
    for kind in KINDS:
        for example in examples[kind]:
            digest.update(json.dumps(example.to_dict(), sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def _library_versions() -> dict[str, str]:
    import peft
    import transformers

    from mosr import __version__

    return {"mosr": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


def _check_examples(method: Method, examples: dict[str, list[TrainingExample]], batch_size: int) -> None:
    ids = [example.id for kind in KINDS for example in examples[kind]]
    if len(set(ids)) != len(ids):
        duplicate = next(identifier for identifier in ids if ids.count(identifier) > 1)
        raise MosrError(f"training example id {duplicate!r} occurs more than once: ids must be unique")
    for group in method.groups():
        count = sum(len(examples[kind]) for kind in group.kinds)
        if count < batch_size:
            raise MosrError(
                f"the {method.name} method draws batches of {batch_size} {' and '.join(group.kinds)} examples "
                f"for its {group.name!r} losses, but the training set has {count}: build a larger training set "
                f"or lower the batch size"
            )


class LossLog:
    """`losses.jsonl`: one JSON record per step."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.records: list[dict] = []
        if path.is_file():
            with path.open(encoding="utf-8") as file:
                for line in file:
                    if line.strip():
                        record = json.loads(line)
                        if record["step"] < resume_step:
                            self.records.append(record)
        # Steps after the checkpoint will be trained again, so their old records go.
        with path.open("w", encoding="utf-8") as file:
            for record in self.records:
                file.write(json.dumps(record) + "\n")

    def append(self, record: dict) -> None:
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")


def plot_losses(records: list[dict], path: Path, title: str) -> None:
    """Draw each loss term over the steps, one panel per term, into a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for record in records for name in record["losses"]))
    names.append("total")
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        key = "total" if name == "total" else None
        steps = [record["step"] + 1 for record in records if key or name in record["losses"]]
        values = [record["total"] if key else record["losses"][name] for record in records if key or name in record["losses"]]
        axis.plot(steps, values, linewidth=1)
        axis.set_title(name if key else f"{name} (unweighted)", fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _prepare_run_dir(run_dir: Path, config: dict) -> bool:
    """Write `config.json`, or check it against an earlier run's; return True when resuming."""
    path = run_dir / CONFIG_FILE
    if path.is_file():
        existing = json.loads(path.read_text(encoding="utf-8"))
        differing = sorted(key for key in ("method", "method_options", "training", "model", "training_set")
                           if existing.get(key) != config.get(key))
        if differing:
            raise MosrError(
                f"{run_dir} contains a training run with different settings ({', '.join(differing)} differ): "
                f"use a new output folder, or the same settings to resume"
            )
        if existing.get("versions") != config.get("versions"):
            logger.warning("resuming %s with other library versions than it started with", run_dir)
        return True
    # The training set that `mosr train` builds for a run lives inside the run folder.
    if run_dir.exists() and any(entry.name != TRAINING_SET_DIR for entry in run_dir.iterdir()):
        raise MosrError(f"output folder {run_dir} is not empty and contains no training run: choose a new folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return False


def _finished_result(run_dir: Path, method: str) -> TrainingResult:
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    logger.info("training in %s has already finished (%d steps); nothing to do", run_dir, summary["steps"])
    return TrainingResult(run_dir=run_dir, adapter_dir=run_dir, method=method, steps=summary["steps"],
                          final_losses=summary["final_losses"], wall_time_s=0.0)


def train(
    loaded: LoadedModel,
    training_set,
    *,
    method: str | Method = "mosr",
    output_dir: str | Path,
    settings: TrainingSettings | None = None,
    options: dict | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Train a LoRA defense on `loaded` and write it to `output_dir`.

    Args:
        loaded: the model to defend, without adapters. After training, `loaded.model` is the
            PeftModel with the trained adapter, in eval mode, and `loaded.identity["adapter"]`
            names `output_dir`. When training raises after the adapters were added,
            `loaded.model` keeps them half-trained: load the model again before other use.
        training_set: the examples; see `examples_by_kind` for the accepted forms.
        method: a method name ("circuit-breakers", "repbend", "sft", "mosr") or a `Method`.
        output_dir: the run folder; an interrupted run in it continues from its newest checkpoint.
        settings: shared settings; defaults from `TrainingSettings`.
        options: the method's options as a (possibly nested) dict, when `method` is a name.
        progress: show a progress bar.

    Raises:
        MosrError: on invalid settings or training data, a model without a chat template, a loss
            that becomes NaN or infinite (the newest checkpoint is kept), or adapters that
            receive no gradient.
    """
    if not has_chat_template(loaded.tokenizer):
        raise MosrError("training needs a chat model: the tokenizer has no chat template")
    if hasattr(loaded.model, "peft_config"):
        raise MosrError("the model already has an adapter: train on the base model")
    method = method if isinstance(method, Method) else create_method(method, options)
    settings = (settings or TrainingSettings()).resolved(loaded.num_layers)
    examples = examples_by_kind(training_set)
    _check_examples(method, examples, settings.batch_size)

    run_dir = Path(output_dir)
    config = {
        "method": method.name,
        "method_options": method.options_dict(),
        "training": settings.to_dict(),
        "model": {key: loaded.identity.get(key) for key in _MODEL_FIELDS},
        "training_set": {"sha256": _fingerprint(examples),
                         "counts": {kind: len(examples[kind]) for kind in KINDS}},
        "versions": _library_versions(),
    }
    resume = _prepare_run_dir(run_dir, config)
    if resume and (run_dir / SUMMARY_FILE).is_file():
        if (run_dir / ADAPTER_WEIGHTS_FILE).is_file():
            return _finished_result(run_dir, method.name)
        logger.warning("%s finished training but its adapter weights are missing: training it again", run_dir)
        (run_dir / SUMMARY_FILE).unlink()

    torch.manual_seed(settings.seed)
    method.prepare(PreparationContext(loaded=loaded, examples=examples, run_dir=run_dir,
                                      system_prompt=settings.system_prompt, resume=resume))
    return _Training(loaded, method, settings, examples, run_dir, progress).run()


class _Training:
    """One call of `train`: model wrapping, the step loop, checkpoints and outputs."""

    def __init__(self, loaded, method, settings, examples, run_dir, progress):
        self.loaded = loaded
        self.method = method
        self.settings = settings
        self.run_dir = run_dir
        self.progress = progress
        self.device = loaded.device
        self.pad_token_id = loaded.tokenizer.pad_token_id

        # The same seed gives the same LoRA initialisation (peft draws lora_A from the global RNG).
        torch.manual_seed(settings.seed)
        self.model = add_lora(
            loaded.model, rank=settings.lora_rank, alpha=settings.lora_alpha, dropout=settings.lora_dropout,
            lora_layers=settings.lora_layers, modules=settings.lora_modules,
        )
        loaded.model = self.model
        if settings.lora_init_std > 0:
            self._perturb_lora_b(settings.lora_init_std)
        if settings.gradient_checkpointing:
            self._enable_gradient_checkpointing()
        self._warn_about_layers()
        self.runner = ForwardRunner(self.model, loss_layers=settings.loss_layers, lora_layers=settings.lora_layers,
                                    cache_bytes=settings.frozen_cache_mb * 2**20)

        end_of_turn = set(end_of_turn_token_ids(loaded.tokenizer, self.model.get_base_model()))
        self.streams = {}
        for group in method.groups():
            pool = [example for kind in group.kinds for example in examples[kind]]
            encoded = encode_examples(loaded.tokenizer, pool, end_of_turn_ids=end_of_turn,
                                      max_length=settings.max_length, system_prompt=settings.system_prompt)
            self.streams[group.name] = ExampleStream(group.name, encoded, seed=settings.seed,
                                                     batch_size=settings.batch_size)

        self.parameters = list(lora_parameters(self.model).values())
        self.optimizer = torch.optim.AdamW(self.parameters, lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        warmup = settings.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )

    def _perturb_lora_b(self, std: float) -> None:
        # With lora_B = 0 the adapted states equal the frozen ones, where the rerouting loss has zero
        # gradient, so the retain term alone steers the first steps and keeps the adapter near zero.
        # A small random start gives rerouting a gradient from the first step.
        with torch.no_grad():
            for name, parameter in lora_parameters(self.model).items():
                if "lora_B" in name:
                    parameter.normal_(0.0, std)

    def _enable_gradient_checkpointing(self) -> None:
        # Reentrant checkpointing would cut the graph between the hooked block outputs and the adapters.
        causal_lm = self.model.get_base_model()
        kwargs = {"use_reentrant": False}
        if hasattr(causal_lm, "activation_checkpointing_enable"):  # transformers 5.25 deprecates the old name
            causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def _warn_about_layers(self) -> None:
        settings = self.settings
        first_block = min(settings.lora_layers)
        unreachable = [layer for layer in settings.loss_layers if layer - 1 < first_block]
        if unreachable:
            logger.warning(
                "loss layers %s lie below the first LoRA block %d, so the adapters cannot change them",
                unreachable, first_block,
            )
        if not any(group.request.logits for group in self.method.groups()):
            idle = [block for block in settings.lora_layers if block > max(settings.loss_layers) - 1]
            if idle:
                logger.warning("LoRA blocks %s lie above the deepest loss layer and get no gradient", idle)

    def run(self) -> TrainingResult:
        settings = self.settings
        checkpoints = list_checkpoints(self.run_dir)
        start_step = 0
        last_checkpoint: Checkpoint | None = None
        if checkpoints:
            last_checkpoint = checkpoints[-1]
            start_step = load_checkpoint(last_checkpoint, self.model, self.optimizer, self.scheduler)
            logger.info("resuming %s from the checkpoint after step %d", self.run_dir, start_step)
        log = LossLog(self.run_dir / LOSSES_FILE, start_step)

        from tqdm.auto import tqdm

        self.model.train()
        started = time.perf_counter()
        step_times = []
        bar = tqdm(total=settings.steps, initial=start_step, desc=f"training {self.method.name}", unit="step",
                   disable=not self.progress)
        try:
            for step in range(start_step, settings.steps):
                step_started = time.perf_counter()
                record = self._step(step, last_checkpoint, check_gradients=step == start_step)
                record["seconds"] = round(time.perf_counter() - step_started, 4)
                step_times.append(record["seconds"])
                log.append(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['total']:.4f}")
                done = step + 1
                if done % settings.checkpoint_every == 0 and done < settings.steps:
                    last_checkpoint = save_checkpoint(self.run_dir, done, self.model, self.optimizer, self.scheduler,
                                                      keep=settings.keep_checkpoints)
        finally:
            bar.close()
        wall_time = time.perf_counter() - started
        return self._finish(log, wall_time, start_step if checkpoints else None, step_times)

    def _step(self, step: int, last_checkpoint: Checkpoint | None, *, check_gradients: bool) -> dict:
        progress = Progress(step=step, total_steps=self.settings.steps)
        values: dict[str, float] = {}
        coefficients: dict[str, float] = {}
        total = 0.0
        for group in self.method.groups():
            batch = self.streams[group.name].batch(step, self.pad_token_id, self.device)
            outputs = self.runner.run(batch, group.request)
            terms = self.method.loss_terms(group.name, outputs, progress)
            group_loss = None
            for term in terms:
                value = float(term.value.detach())
                if not math.isfinite(value):
                    self._stop_on_non_finite(f"loss term {term.name!r} is {value}", step, last_checkpoint)
                values[term.name] = value
                coefficients[term.name] = term.coefficient
                total += term.coefficient * value
                weighted = term.coefficient * term.value
                group_loss = weighted if group_loss is None else group_loss + weighted
            # Backward per group frees each group's activations before the next group's forward pass.
            if group_loss is not None and group_loss.requires_grad:
                group_loss.backward()
            del outputs, terms, group_loss

        if check_gradients:
            self._check_gradients_reach_adapters()
        gradient_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.settings.max_grad_norm))
        if not math.isfinite(gradient_norm):
            self._stop_on_non_finite(f"the gradient norm is {gradient_norm}", step, last_checkpoint)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"step": step, "losses": values, "coefficients": coefficients, "total": total,
                "learning_rate": learning_rate, "gradient_norm": gradient_norm}

    def _check_gradients_reach_adapters(self) -> None:
        """Stop when no LoRA weight received a gradient: the losses are cut off from the adapters."""
        if any(parameter.grad is not None for parameter in self.parameters):
            return
        hint = ""
        if self.settings.gradient_checkpointing:
            hint = " With gradient checkpointing, check that the model supports non-reentrant checkpointing."
        raise MosrError(
            f"no LoRA weight received a gradient in the first step: the losses do not depend on the adapters "
            f"(LoRA blocks {self.settings.lora_layers}, loss layers {self.settings.loss_layers}).{hint}"
        )

    def _stop_on_non_finite(self, problem: str, step: int, last_checkpoint: Checkpoint | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if last_checkpoint:
            checkpoint_note = (f"the last good checkpoint, after step {last_checkpoint.step}, is kept in "
                               f"{last_checkpoint.path}")
        else:
            checkpoint_note = "no checkpoint was written before it"
        raise MosrError(
            f"training stopped at step {step + 1}: {problem}; {checkpoint_note}. Lower the learning rate or check "
            f"the training examples, then train into a new output folder"
        )

    def _finish(self, log: LossLog, wall_time: float, resumed_from: int | None, step_times: list[float]) -> TrainingResult:
        self.model.save_pretrained(str(self.run_dir))
        plot_losses(log.records, self.run_dir / PLOT_FILE, f"{self.method.name}: loss terms")
        final_losses = log.records[-1]["losses"] if log.records else {}
        summary = {
            "method": self.method.name,
            "steps": self.settings.steps,
            "final_losses": final_losses,
            "wall_time_s": round(wall_time, 2),
            "mean_step_s": round(sum(step_times) / len(step_times), 4) if step_times else None,
            "resumed_from_step": resumed_from,
        }
        (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        remove_checkpoints(self.run_dir)
        self.model.eval()
        self.loaded.identity["adapter"] = str(self.run_dir.resolve())
        logger.info("trained %s for %d steps in %.0f s; adapter in %s", self.method.name, self.settings.steps,
                    wall_time, self.run_dir)
        return TrainingResult(run_dir=self.run_dir, adapter_dir=self.run_dir, method=self.method.name,
                              steps=self.settings.steps, final_losses=final_losses, wall_time_s=wall_time,
                              resumed_from_step=resumed_from, step_times_s=step_times)
