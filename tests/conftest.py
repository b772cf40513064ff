"""Shared fixtures: a tiny randomly initialised Llama with the embedded model's real tokenizer."""

from __future__ import annotations

import pytest
import torch

from mosr.models import DEFAULT_MODEL, load_model


def build_tiny_model(folder, tokenizer, *, num_layers: int = 4, seed: int = 0):
    """Save a 4-layer Llama with random weights and the given tokenizer to `folder`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def real_model():
    """The embedded SmolLM2-135M-Instruct (dequantised once, then cached)."""
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_model):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), real_model.tokenizer)


@pytest.fixture()
def tiny_model(tiny_model_dir):
    return load_model(str(tiny_model_dir))
