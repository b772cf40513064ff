"""LoRA adapters through peft: per-architecture facts, target modules and layer checks.

Layer numbering used by the defenses:
- LoRA layers are decoder-block indices counted from 0, as in module names (`model.layers.7`) and
  peft's `layers_to_transform`.
- Loss layers are hidden-state indices as in transformers' `output_hidden_states`: index l, for
  l in 1..L, is the output of block l - 1 (the l-th block). Index 0 (the embeddings) is not a
  valid loss layer, because no adapter can change it. Unlike transformers' last hidden state,
  index L is the block's raw output, before the final norm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from mosr.errors import MosrError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    """Facts about one transformers model type that the trainer needs."""

    lora_modules: tuple[str, ...]
    """Default LoRA target modules: names of the linear layers inside each decoder block."""
    final_norm: str
    """Attribute of the decoder (the model without its LM head) that contains the final norm."""
    fan_in_fan_out: bool = False
    """True where the linear layers are transformers' Conv1D, which stores weights transposed."""


_LLAMA_STYLE = Architecture(
    lora_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    final_norm="norm",
)

# Keyed by `config.model_type`.
ARCHITECTURES: dict[str, Architecture] = {
    "llama": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "qwen3": _LLAMA_STYLE,
    "gemma": _LLAMA_STYLE,
    "gemma2": _LLAMA_STYLE,
    "gemma3_text": _LLAMA_STYLE,
    "gpt2": Architecture(lora_modules=("c_attn", "c_proj", "c_fc"), final_norm="ln_f", fan_in_fan_out=True),
}


def architecture_of(model: torch.nn.Module) -> Architecture:
    """Look up the architecture of a transformers causal LM by its `config.model_type`."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise MosrError(
            f"training does not support model type {model_type!r} ({type(model).__name__}) yet: "
            f"supported types are {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[model_type]


def default_loss_layers(num_layers: int) -> list[int]:
    """Return hidden-state indices at one third and two thirds of the depth: [10, 20] for 30 blocks."""
    layers = sorted({max(1, round(num_layers / 3)), max(1, round(2 * num_layers / 3))})
    return layers


def default_lora_layers(num_layers: int, loss_layers: list[int]) -> list[int]:
    """Return blocks from a quarter of the depth up to the block that outputs the deepest loss layer.

    For 30 blocks and loss layers [10, 20] these are blocks 7 to 19. Blocks above the deepest
    loss layer cannot change a representation loss, and blocks near the embeddings add backward
    cost for little effect, which is why the window stops there.
    """
    deepest_block = max(loss_layers) - 1
    first = min(num_layers // 4, deepest_block)
    return list(range(first, deepest_block + 1))


def check_loss_layers(loss_layers: list[int], num_layers: int) -> list[int]:
    """Check hidden-state indices against 1..num_layers; return them sorted without duplicates."""
    if not loss_layers:
        raise MosrError("no loss layers given: give at least one hidden-state index")
    for layer in loss_layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise MosrError(f"loss layer {layer!r} is not an integer")
        if not 1 <= layer <= num_layers:
            raise MosrError(
                f"loss layer {layer} is out of range: this model has hidden-state indices 1 to {num_layers} "
                f"(the output of each of its {num_layers} decoder blocks)"
            )
    return sorted(set(loss_layers))


def check_lora_layers(lora_layers: list[int], num_layers: int) -> list[int]:
    """Check decoder-block indices against 0..num_layers-1; return them sorted without duplicates."""
    if not lora_layers:
        raise MosrError("no LoRA layers given: give at least one decoder-block index")
    for layer in lora_layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise MosrError(f"LoRA layer {layer!r} is not an integer")
        if not 0 <= layer < num_layers:
            raise MosrError(
                f"LoRA layer {layer} is out of range: this model has decoder blocks 0 to {num_layers - 1}"
            )
    return sorted(set(lora_layers))


def _count_target_modules(blocks: torch.nn.ModuleList, lora_layers: list[int], modules: list[str]) -> int:
    wanted = set(modules)
    count = 0
    for index in lora_layers:
        for name, module in blocks[index].named_modules():
            if name.rsplit(".", 1)[-1] in wanted and not list(module.children()):
                count += 1
    return count


def add_lora(
    model: torch.nn.Module,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    lora_layers: list[int],
    modules: list[str] | None = None,
):
    """Wrap a causal LM in a peft LoRA model on the given blocks and modules, and check what was adapted.

    Returns the PeftModel. Raises MosrError when a module name matches nothing in the chosen blocks
    or when peft adapted a different number of modules than the blocks contain.
    """
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    from mosr.representations import find_decoder_layers

    architecture = architecture_of(model)
    modules = list(modules) if modules else list(architecture.lora_modules)
    blocks = find_decoder_layers(model)

    for name in modules:
        if _count_target_modules(blocks, lora_layers, [name]) == 0:
            raise MosrError(
                f"LoRA module {name!r} matches no layer in the decoder blocks of {type(model).__name__}: "
                f"modules of this architecture are {', '.join(architecture.lora_modules)}"
            )
    expected = _count_target_modules(blocks, lora_layers, modules)

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=modules,
        layers_to_transform=lora_layers,
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=architecture.fan_in_fan_out,
    )
    peft_model = get_peft_model(model, config)
    adapted = sum(1 for module in peft_model.modules() if isinstance(module, LoraLayer))
    if adapted != expected:
        raise MosrError(
            f"peft adapted {adapted} modules, but blocks {lora_layers[0]}..{lora_layers[-1]} contain {expected} "
            f"modules named {', '.join(modules)}: check the LoRA layers and modules"
        )
    trainable = sum(parameter.numel() for parameter in peft_model.parameters() if parameter.requires_grad)
    logger.info(
        "LoRA rank %d on %d modules (%s) in blocks %s: %d trainable parameters",
        rank, adapted, ", ".join(modules), _format_ranges(lora_layers), trainable,
    )
    return peft_model


def lora_parameters(peft_model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Return the trainable LoRA parameters by name."""
    return {name: parameter for name, parameter in peft_model.named_parameters()
            if parameter.requires_grad and "lora_" in name}


def _format_ranges(values: list[int]) -> str:
    """Write sorted integers as ranges, e.g. [1, 2, 3, 7] as '1-3,7'."""
    parts = []
    start = previous = values[0]
    for value in values[1:] + [None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


def parse_layer_list(text: str) -> list[int]:
    """Parse '10,20', '7-19' or '1,3-5' into a list of non-negative integers."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            if dash:
                values.extend(range(int(first), int(last) + 1))
            else:
                values.append(int(part))
        except ValueError:
            raise MosrError(f"invalid layer list {text!r}: use numbers and ranges such as '10,20' or '7-19'") from None
    if not values:
        raise MosrError(f"invalid layer list {text!r}: it names no layer")
    return values
