import logging

import numpy as np
import pytest
import torch

from mosr.errors import MosrError
from mosr.models import encode_chat
from mosr.representations import (
    extract_hidden_states,
    find_decoder_layers,
    hidden_state_cache_key,
    iterate_padded_batches,
    resolve_layers,
    run_batched,
)

PROMPTS = [
    "Hi",
    "How do I kill a Python process that hangs after the parent exits and ignores SIGTERM?",
    "What is the capital of France?",
    "Write a short poem about the sea, the wind and a lighthouse keeper who lost his way home.",
    "Why?",
]


def _reference_states(loaded, prompt):
    """Hook outputs of the embeddings, every decoder block and the final norm for one unpadded prompt."""
    base = loaded.model
    captured = {}
    handles = [base.model.embed_tokens.register_forward_hook(lambda m, a, o: captured.__setitem__("embed", o))]
    for number, block in enumerate(base.model.layers, start=1):
        handles.append(
            block.register_forward_hook(
                lambda m, a, o, number=number: captured.__setitem__(number, o[0] if isinstance(o, tuple) else o)
            )
        )
    handles.append(base.model.norm.register_forward_hook(lambda m, a, o: captured.__setitem__("norm", o)))
    ids = torch.tensor([encode_chat(loaded.tokenizer, [prompt])[0]])
    try:
        with torch.no_grad():
            base(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def test_layer_numbering_matches_hooks(tiny_model):
    prompt = PROMPTS[1]
    reference = _reference_states(tiny_model, prompt)
    num_layers = tiny_model.num_layers
    with_norm = extract_hidden_states(tiny_model, [prompt], pooling="last", progress=False)["last"][0]
    without_norm = extract_hidden_states(tiny_model, [prompt], pooling="last", final_norm=False, progress=False)["last"][0]

    assert with_norm.shape == (num_layers + 1, tiny_model.model.config.hidden_size)
    np.testing.assert_allclose(with_norm[0], reference["embed"][0, -1].numpy(), atol=1e-5)
    for layer in range(1, num_layers):
        np.testing.assert_allclose(with_norm[layer], reference[layer][0, -1].numpy(), atol=1e-5)
        np.testing.assert_allclose(without_norm[layer], with_norm[layer], atol=1e-6)
    np.testing.assert_allclose(with_norm[num_layers], reference["norm"][0, -1].numpy(), atol=1e-5)
    np.testing.assert_allclose(without_norm[num_layers], reference[num_layers][0, -1].numpy(), atol=1e-5)
    assert not np.allclose(with_norm[num_layers], without_norm[num_layers])


def test_mean_pooling_matches_manual_mean(tiny_model):
    prompt = PROMPTS[3]
    reference = _reference_states(tiny_model, prompt)
    states = extract_hidden_states(tiny_model, [prompt], pooling="mean", progress=False)["mean"][0]
    np.testing.assert_allclose(states[2], reference[2][0].mean(dim=0).numpy(), atol=1e-5)


def test_batched_matches_one_at_a_time(tiny_model):
    batched = extract_hidden_states(tiny_model, PROMPTS, batch_size=len(PROMPTS), progress=False)
    for index, prompt in enumerate(PROMPTS):
        alone = extract_hidden_states(tiny_model, [prompt], batch_size=1, progress=False)
        for pooling in ("last", "mean"):
            np.testing.assert_allclose(batched[pooling][index], alone[pooling][0], atol=1e-4, rtol=1e-4)


def test_short_prompt_padded_in_batch(tiny_model):
    """The shortest prompt gets most padding when batched with the longest ones."""
    short, long_prompts = PROMPTS[0], [PROMPTS[1], PROMPTS[3]]
    batched = extract_hidden_states(tiny_model, long_prompts + [short], batch_size=3, progress=False)
    alone = extract_hidden_states(tiny_model, [short], batch_size=1, progress=False)
    for pooling in ("last", "mean"):
        assert np.isfinite(batched[pooling]).all()
        np.testing.assert_allclose(batched[pooling][2], alone[pooling][0], atol=1e-4, rtol=1e-4)


def test_output_types_and_order(tiny_model):
    states = extract_hidden_states(tiny_model, PROMPTS, batch_size=2, progress=False)
    assert set(states) == {"last", "mean"}
    for array in states.values():
        assert array.dtype == np.float32
        assert array.shape == (len(PROMPTS), tiny_model.num_layers + 1, tiny_model.model.config.hidden_size)
    reversed_states = extract_hidden_states(tiny_model, PROMPTS[::-1], batch_size=2, progress=False)
    np.testing.assert_allclose(reversed_states["mean"][::-1], states["mean"], atol=1e-4)


def test_layer_selection_keeps_given_order(tiny_model):
    full = extract_hidden_states(tiny_model, PROMPTS[:2], pooling="last", progress=False)["last"]
    chosen = extract_hidden_states(tiny_model, PROMPTS[:2], pooling="last", layers=[3, -1, 0], progress=False)["last"]
    assert chosen.shape[1] == 3
    np.testing.assert_allclose(chosen[:, 0], full[:, 3], atol=1e-6)
    np.testing.assert_allclose(chosen[:, 1], full[:, tiny_model.num_layers], atol=1e-6)
    np.testing.assert_allclose(chosen[:, 2], full[:, 0], atol=1e-6)


def test_padded_batches_left_pad_and_sort():
    token_ids = [[5], [1, 2, 3], [7, 8]]
    batches = list(iterate_padded_batches(token_ids, 2, 0, torch.device("cpu")))
    indices, input_ids, attention_mask, position_ids = batches[0]
    assert indices == [1, 2]
    assert input_ids.tolist() == [[1, 2, 3], [0, 7, 8]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert position_ids.tolist() == [[0, 1, 2], [0, 0, 1]]
    assert batches[1][0] == [0]


def test_cache_hit_skips_model(tiny_model, tmp_path, caplog):
    calls = []
    handle = tiny_model.model.get_input_embeddings().register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        first = extract_hidden_states(tiny_model, PROMPTS, cache_dir=tmp_path, progress=False)
        assert calls
        calls.clear()
        with caplog.at_level(logging.INFO, logger="mosr.representations"):
            second = extract_hidden_states(tiny_model, PROMPTS, cache_dir=tmp_path, progress=False)
            only_last = extract_hidden_states(tiny_model, PROMPTS, pooling="last", cache_dir=tmp_path, progress=False)
        assert calls == []
        assert "loaded from cache" in caplog.text
        np.testing.assert_array_equal(first["mean"], second["mean"])
        np.testing.assert_array_equal(first["last"], only_last["last"])
        assert list(tmp_path.glob("*.pickle")) == []
        assert len(list(tmp_path.glob("*.safetensors"))) == 2
    finally:
        handle.remove()


def test_cache_misses_on_changed_inputs(tiny_model, tmp_path):
    calls = []
    handle = tiny_model.model.get_input_embeddings().register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        extract_hidden_states(tiny_model, PROMPTS, cache_dir=tmp_path, progress=False)
        for kwargs in ({"system_prompt": "Be brief."}, {"layers": [1, 2]}, {"final_norm": False}):
            calls.clear()
            extract_hidden_states(tiny_model, PROMPTS, cache_dir=tmp_path, progress=False, **kwargs)
            assert calls, f"expected a cache miss for {kwargs}"
        calls.clear()
        extract_hidden_states(tiny_model, PROMPTS[:2], cache_dir=tmp_path, progress=False)
        assert calls
    finally:
        handle.remove()


def test_cache_key_depends_on_adapter(tiny_model):
    ids = encode_chat(tiny_model.tokenizer, PROMPTS)
    before = hidden_state_cache_key(tiny_model, ids, [0, 1], True)
    tiny_model.identity["adapter"] = "/somewhere/adapter"
    assert hidden_state_cache_key(tiny_model, ids, [0, 1], True) != before


def test_works_on_peft_model(tiny_model):
    from peft import LoraConfig, get_peft_model

    base = extract_hidden_states(tiny_model, PROMPTS[:2], progress=False)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tiny_model.model = get_peft_model(tiny_model.model, config)
    adapted = extract_hidden_states(tiny_model, PROMPTS[:2], progress=False)
    pre_norm = extract_hidden_states(tiny_model, PROMPTS[:2], final_norm=False, progress=False)
    assert len(find_decoder_layers(tiny_model.model)) == tiny_model.num_layers
    np.testing.assert_allclose(adapted["last"][:, 0], base["last"][:, 0], atol=1e-6)
    assert not np.allclose(adapted["last"][:, -1], base["last"][:, -1])
    assert np.isfinite(pre_norm["mean"]).all()


def test_model_in_training_mode_restored(tiny_model):
    tiny_model.model.train()
    extract_hidden_states(tiny_model, PROMPTS[:1], progress=False)
    assert tiny_model.model.training


def test_layers_out_of_range_rejected(tiny_model):
    with pytest.raises(MosrError, match="out of range"):
        extract_hidden_states(tiny_model, PROMPTS, layers=[tiny_model.num_layers + 1], progress=False)
    with pytest.raises(MosrError, match="out of range"):
        resolve_layers([-(tiny_model.num_layers + 2)], tiny_model.num_layers)
    with pytest.raises(MosrError, match="empty"):
        resolve_layers([], tiny_model.num_layers)
    with pytest.raises(MosrError, match="not an integer"):
        resolve_layers([1.5], tiny_model.num_layers)


def test_bad_arguments_rejected(tiny_model):
    with pytest.raises(MosrError, match="no prompts"):
        extract_hidden_states(tiny_model, [], progress=False)
    with pytest.raises(MosrError, match="unknown pooling"):
        extract_hidden_states(tiny_model, PROMPTS, pooling=("max",), progress=False)
    with pytest.raises(MosrError, match="batch size"):
        extract_hidden_states(tiny_model, PROMPTS, batch_size=0, progress=False)


class _NoHiddenStates(torch.nn.Module):
    """A model wrapper whose outputs carry logits only."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config

    def forward(self, **kwargs):
        kwargs.pop("output_hidden_states", None)
        logits = self.inner(**kwargs).logits
        return type("Output", (), {"logits": logits, "hidden_states": None})()


def test_model_without_hidden_states_rejected(tiny_model):
    tiny_model.model = _NoHiddenStates(tiny_model.model)
    with pytest.raises(MosrError, match="no hidden states"):
        extract_hidden_states(tiny_model, PROMPTS[:1], progress=False)


def test_run_batched_returns_input_order(tiny_model):
    ids = encode_chat(tiny_model.tokenizer, PROMPTS)
    lengths = run_batched(
        tiny_model, ids, lambda outputs, mask: mask.sum(dim=1, keepdim=True), batch_size=2, progress=False
    )
    assert lengths[:, 0].tolist() == [len(row) for row in ids]


@pytest.mark.real_model
def test_embedded_model_states_shape(real_model):
    states = extract_hidden_states(real_model, PROMPTS[:2], pooling="last", layers=[0, 15, -1], progress=False)["last"]
    assert states.shape == (2, 3, 576)
    assert np.isfinite(states).all()
    # Every prompt ends with the same generation prompt, so the embeddings of the last token agree.
    np.testing.assert_array_equal(states[0, 0], states[1, 0])
    assert not np.allclose(states[0, 2], states[1, 2])
