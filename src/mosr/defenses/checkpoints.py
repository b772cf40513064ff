"""Training checkpoints: adapter weights, optimizer, scheduler and RNG state, loadable with `weights_only=True`.

Layout: `RUN_DIR/checkpoints/step-000050/` contains `adapter_model.safetensors` (the LoRA weights as
peft names them) and `training_state.pt` (tensors and plain Python values only). A checkpoint is
written to a `.partial` folder and renamed when complete, so a run killed while saving leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mosr.errors import MosrError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{6,})$")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder and the number of steps done when it was written."""

    path: Path
    step: int


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Return the complete checkpoints of a run, oldest first."""
    folder = run_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and (path / "training_state.pt").is_file() and (path / "adapter_model.safetensors").is_file():
            found.append(Checkpoint(path, int(match.group(1))))
    return sorted(found, key=lambda checkpoint: checkpoint.step)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, peft_model, optimizer, scheduler, *, keep: int) -> Checkpoint:
    """Write a checkpoint after `step` steps and delete all but the newest `keep`."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = run_dir / CHECKPOINTS_DIR
    final = folder / f"step-{step:06d}"
    partial = folder / f"step-{step:06d}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)

    adapter = {name: tensor.detach().contiguous().cpu() for name, tensor in get_peft_model_state_dict(peft_model).items()}
    save_file(adapter, str(partial / "adapter_model.safetensors"), metadata={"format": "pt", "step": str(step)})
    torch.save(
        {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
        partial / "training_state.pt",
    )
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)

    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    logger.debug("checkpoint written: %s", final)
    return Checkpoint(final, step)


def load_checkpoint(checkpoint: Checkpoint, peft_model, optimizer, scheduler) -> int:
    """Restore adapter weights, optimizer, scheduler and RNG state; return the number of steps done."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        adapter = load_file(str(checkpoint.path / "adapter_model.safetensors"))
        state = torch.load(checkpoint.path / "training_state.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise MosrError(
            f"checkpoint {checkpoint.path} is unreadable ({error}): delete it to resume from an older one"
        ) from None
    expected = set(get_peft_model_state_dict(peft_model))
    if set(adapter) != expected:
        differing = sorted(set(adapter) ^ expected)
        raise MosrError(
            f"checkpoint {checkpoint.path} does not match the adapters of this run ({len(differing)} weights differ, "
            f"e.g. {differing[0]}): train into a new output folder"
        )
    set_peft_model_state_dict(peft_model, adapter)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    if int(state["step"]) != checkpoint.step:
        raise MosrError(f"checkpoint {checkpoint.path} records step {state['step']}, not {checkpoint.step}")
    return checkpoint.step


def remove_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
