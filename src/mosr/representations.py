"""Extract pooled hidden states of prompts from a causal LM, batched and cached.

Layer numbering: index 0 is the output of the embedding layer (the input of the first decoder
block) and index l, for l in 1..L, is the output of decoder block l, where L is
`loaded.num_layers`. This is the order of transformers' `output_hidden_states`. For Llama-style
models in transformers (checked on 5.25), the last entry (index L) has the model's final norm
applied, because transformers replaces it with `last_hidden_state`. With `final_norm=False`,
index L is instead the raw output of the last decoder block, captured by a forward hook, so that
every index is a residual-stream state before any norm.

Prompts are rendered with `mosr.models.encode_chat` and end with the assistant's generation
prompt, so "last" pooling takes the state at the position whose next token is the first
response token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mosr.errors import MosrError
from mosr.models import LoadedModel, _cache_root, encode_chat

logger = logging.getLogger(__name__)

POOLINGS = ("last", "mean")

# Bump when the stored arrays change meaning, so that old cache files are never read.
CACHE_FORMAT_VERSION = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def default_cache_dir() -> Path:
    """Hidden-state cache folder under the mosr cache ($MOSR_CACHE, else ~/.cache/mosr)."""
    return _cache_root() / "hidden_states"


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return the transformers model inside a PEFT wrapper, or the model itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def backbone_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return the transformer stack without the LM head (`base_model` of a transformers model), or the model itself.

    Extraction calls this stack directly, because the LM head's logits over the whole vocabulary
    at every position cost time and memory that hidden states do not need. LoRA layers that PEFT
    injected into the stack stay active. PEFT methods that act outside the stack, such as prompt
    tuning, are bypassed.
    """
    base = unwrap_model(model)
    return getattr(base, "base_model", base)


def find_decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """Find the list of decoder blocks: the one ModuleList with `config.num_hidden_layers` entries."""
    base = unwrap_model(model)
    num_layers = int(base.config.num_hidden_layers)
    candidates = [
        module
        for module in base.modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers
    ]
    if len(candidates) != 1:
        raise MosrError(
            f"cannot locate the decoder blocks of {type(base).__name__}: found {len(candidates)} module lists "
            f"with {num_layers} entries, expected exactly one"
        )
    return candidates[0]


def resolve_layers(layers: Sequence[int] | None, num_layers: int) -> list[int]:
    """Check layer indices against 0..num_layers and turn negative indices into positive ones."""
    if layers is None:
        return list(range(num_layers + 1))
    layers = list(layers)
    if not layers:
        raise MosrError("the list of layers is empty: give at least one layer index")
    resolved = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise MosrError(f"layer index {layer!r} is not an integer")
        if not -(num_layers + 1) <= layer <= num_layers:
            raise MosrError(
                f"layer {layer} is out of range: this model has layers 0 (embeddings) to {num_layers} "
                f"(last decoder block); negative indices count from the end"
            )
        resolved.append(int(layer) % (num_layers + 1))
    return resolved


def _validate_pooling(pooling: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(pooling, str):
        pooling = (pooling,)
    pooling = tuple(dict.fromkeys(pooling))
    if not pooling:
        raise MosrError(f"no pooling given: choose from {', '.join(POOLINGS)}")
    unknown = [name for name in pooling if name not in POOLINGS]
    if unknown:
        raise MosrError(f"unknown pooling {unknown[0]!r}: choose from {', '.join(POOLINGS)}")
    return pooling


def _file_fingerprints(path_text: str | None) -> list:
    """Size and modification time of the weight files at a path, so that retrained weights miss the cache."""
    if not path_text:
        return []
    path = Path(path_text)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(file for file in path.iterdir() if file.suffix in _WEIGHT_SUFFIXES)
    else:
        return []
    return [[file.name, file.stat().st_size, file.stat().st_mtime_ns] for file in files]


def hidden_state_cache_key(
    loaded: LoadedModel,
    token_ids: list[list[int]],
    layers: list[int],
    final_norm: bool,
) -> str:
    """Hash of everything that determines the hidden states of one pooling.

    The model is identified by `loaded.identity` (which names the adapter) plus the size and
    modification time of its weight and adapter files. Token ids stand for the prompts, the
    system prompt and the chat template together.
    """
    identity = dict(loaded.identity)
    payload = {
        "format": CACHE_FORMAT_VERSION,
        "identity": identity,
        "weights": _file_fingerprints(identity.get("source")),
        "adapter_weights": _file_fingerprints(identity.get("adapter")),
        "token_ids_sha256": hashlib.sha256(json.dumps(token_ids).encode()).hexdigest(),
        "layers": layers,
        "final_norm": final_norm,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cache_path(cache_dir: Path, key: str, pooling: str) -> Path:
    return cache_dir / f"{key}-{pooling}.safetensors"


def _read_cache(cache_dir: Path, key: str, pooling: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    from safetensors.numpy import load_file

    paths = {name: _cache_path(cache_dir, key, name) for name in pooling}
    if not all(path.is_file() for path in paths.values()):
        return None
    try:
        return {name: load_file(str(path))["hidden_states"] for name, path in paths.items()}
    except (OSError, KeyError, ValueError) as error:
        logger.warning("ignoring unreadable hidden-state cache in %s: %s", cache_dir, error)
        return None


def _write_cache(cache_dir: Path, key: str, states: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for name, array in states.items():
            path = _cache_path(cache_dir, key, name)
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            save_file({"hidden_states": np.ascontiguousarray(array)}, str(partial), metadata={**metadata, "pooling": name})
            os.replace(partial, path)
    except OSError as error:
        logger.warning("could not write the hidden-state cache in %s: %s", cache_dir, error)


def iterate_padded_batches(
    token_ids: list[list[int]],
    batch_size: int,
    pad_token_id: int,
    device: torch.device,
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (indices, input_ids, attention_mask, position_ids) batches, longest prompts first, left padded.

    Sorting by length keeps padding small, and putting the longest batch first makes an
    out-of-memory error show up at once. Position ids count only real tokens, so models with
    absolute position embeddings see the same positions with and without padding.
    """
    if batch_size < 1:
        raise MosrError(f"batch size must be a positive number of prompts, got {batch_size}")
    order = sorted(range(len(token_ids)), key=lambda index: -len(token_ids[index]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        width = max(len(token_ids[index]) for index in indices)
        input_ids = torch.full((len(indices), width), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, index in enumerate(indices):
            ids = token_ids[index]
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
        yield indices, input_ids.to(device), attention_mask.to(device), position_ids.to(device)


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool [batch, layers, tokens, hidden] states of left-padded rows to [batch, layers, hidden].

    "last" takes the final position, which is the last real token under left padding. "mean"
    averages the real tokens only. Padding is excluded by selection, not by multiplying with the
    mask, because a padded position may contain NaN.
    """
    if pooling == "last":
        return hidden[:, :, -1, :]
    if pooling == "mean":
        mask = attention_mask.bool()[:, None, :, None]
        total = torch.where(mask, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device)).sum(dim=2)
        count = attention_mask.sum(dim=1).clamp(min=1).to(hidden.dtype)[:, None, None]
        return total / count
    raise MosrError(f"unknown pooling {pooling!r}: choose from {', '.join(POOLINGS)}")


def _forward_hidden_states(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    last_block: torch.nn.Module | None,
) -> tuple[torch.Tensor, ...]:
    """Run one batch and return all L + 1 hidden states, the last one before the final norm if `last_block` is given."""
    captured: list[torch.Tensor] = []

    def capture_output(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = last_block.register_forward_hook(capture_output) if last_block is not None else None
    try:
        outputs = backbone_model(loaded.model)(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
        )
    finally:
        if handle is not None:
            handle.remove()

    hidden_states = getattr(outputs, "hidden_states", None)
    if hidden_states is None:
        raise MosrError(
            f"{type(unwrap_model(loaded.model)).__name__} returned no hidden states with output_hidden_states=True: "
            "use a transformers causal LM that supports them"
        )
    expected = loaded.num_layers + 1
    if len(hidden_states) != expected:
        raise MosrError(
            f"{type(unwrap_model(loaded.model)).__name__} returned {len(hidden_states)} hidden states, expected "
            f"{expected} (embeddings plus {loaded.num_layers} decoder blocks)"
        )
    if last_block is not None:
        if len(captured) != 1:
            raise MosrError("the forward hook on the last decoder block did not fire exactly once")
        hidden_states = (*hidden_states[:-1], captured[0])
    return hidden_states


def extract_hidden_states(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    pooling: Sequence[str] | str = POOLINGS,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    system_prompt: str | None = None,
    raw: bool = False,
    final_norm: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Compute pooled hidden states of each prompt, rendered as a chat turn, at the given layers.

    Returns one float32 array per pooling name ("last", "mean"), of shape
    [len(prompts), len(layers), hidden_size], rows in the order of `prompts` and layers in the
    order given. `layers=None` means all layers 0..L, see the module docstring for the numbering.
    `final_norm=False` makes index L the last block's output before the final norm.

    With `cache_dir`, results are stored there as safetensors files, one per pooling, keyed by
    the model identity (including the adapter and weight file stamps), the rendered token ids,
    the layers and `final_norm`. Leave `cache_dir` unset for a model whose weights are changing
    in memory, since such changes are invisible to the key. Works on a PeftModel in
    `loaded.model`.
    """
    pooling = _validate_pooling(pooling)
    layer_indices = resolve_layers(layers, loaded.num_layers)
    prompts = list(prompts)
    if not prompts:
        raise MosrError("no prompts to extract hidden states from")
    token_ids = encode_chat(loaded.tokenizer, prompts, system_prompt=system_prompt, raw=raw)
    empty = [index for index, ids in enumerate(token_ids) if not ids]
    if empty:
        raise MosrError(f"prompt {empty[0]} renders to no tokens: remove empty prompts")

    cache_folder = Path(cache_dir) if cache_dir is not None else None
    key = hidden_state_cache_key(loaded, token_ids, layer_indices, final_norm)
    if cache_folder is not None:
        cached = _read_cache(cache_folder, key, pooling)
        if cached is not None:
            logger.info("hidden states of %d prompts loaded from cache %s (key %s)", len(prompts), cache_folder, key)
            return cached

    states = _compute_hidden_states(
        loaded,
        token_ids,
        pooling=pooling,
        layer_indices=layer_indices,
        batch_size=batch_size,
        final_norm=final_norm,
        progress=progress,
    )
    if cache_folder is not None:
        metadata = {"model": str(loaded.identity.get("name")), "layers": json.dumps(layer_indices)}
        _write_cache(cache_folder, key, states, metadata)
        logger.info("hidden states of %d prompts cached in %s (key %s)", len(prompts), cache_folder, key)
    return states


def _compute_hidden_states(
    loaded: LoadedModel,
    token_ids: list[list[int]],
    *,
    pooling: tuple[str, ...],
    layer_indices: list[int],
    batch_size: int,
    final_norm: bool,
    progress: bool,
) -> dict[str, np.ndarray]:
    last_block = None if final_norm else find_decoder_layers(loaded.model)[-1]

    def pool_batch(input_ids, attention_mask, position_ids):
        hidden_states = _forward_hidden_states(loaded, input_ids, attention_mask, position_ids, last_block)
        # [batch, selected layers, tokens, hidden], in float32 whatever the model's dtype.
        selected = torch.stack([hidden_states[layer] for layer in layer_indices], dim=1).float()
        return torch.stack([pool_hidden_states(selected, attention_mask, name) for name in pooling], dim=1)

    pooled = _run_batches(loaded, token_ids, pool_batch, batch_size, progress, "hidden states")
    return {name: np.ascontiguousarray(pooled[:, position]) for position, name in enumerate(pooling)}


def _run_batches(
    loaded: LoadedModel,
    token_ids: list[list[int]],
    step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
    progress: bool,
    description: str,
) -> np.ndarray:
    """Call `step(input_ids, attention_mask, position_ids)` on each batch, without gradients, and gather its rows in input order."""
    if not token_ids:
        raise MosrError("no prompts to run")
    model = loaded.model
    pad_token_id = loaded.tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = loaded.tokenizer.eos_token_id if loaded.tokenizer.eos_token_id is not None else 0
    device = next(model.parameters()).device

    result: np.ndarray | None = None
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(token_ids), desc=description, unit="prompt", disable=not progress)
    try:
        with torch.no_grad():
            for indices, input_ids, attention_mask, position_ids in iterate_padded_batches(
                token_ids, batch_size, pad_token_id, device
            ):
                values = step(input_ids, attention_mask, position_ids).float().cpu().numpy()
                if result is None:
                    result = np.zeros((len(token_ids), *values.shape[1:]), dtype=np.float32)
                result[indices] = values
                bar.update(len(indices))
    finally:
        bar.close()
        model.train(was_training)
    return result


def run_batched(
    loaded: LoadedModel,
    token_ids: list[list[int]],
    compute: Callable[[object, torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 16,
    progress: bool = True,
    description: str = "forward",
) -> np.ndarray:
    """Run the model on left-padded, length-sorted batches and gather `compute(outputs, attention_mask)` rows.

    `compute` gets the model outputs of one batch and returns one float row per prompt. The
    rows come back as a float32 array in input order.
    """

    def forward_batch(input_ids, attention_mask, position_ids):
        outputs = loaded.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return compute(outputs, attention_mask)

    return _run_batches(loaded, token_ids, forward_batch, batch_size, progress, description)
