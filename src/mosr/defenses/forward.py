"""Forward passes of the adapted model M and the frozen model M0 that compute only what the losses use.

Three savings against running the full model with logits for every loss term:

1. A pass stops at the deepest block a loss reads, unless the loss needs logits: a forward hook
   on that block raises `_StopForward`, which `_decoder_pass` catches. Hooks keep this
   independent of how each architecture's decoder loops over its blocks.
2. Logits are computed only at the positions that predict a loss target: the decoder runs
   without the LM head, and the head is applied to those rows alone.
3. M0 is M with its adapters disabled, so blocks below the first LoRA block compute the same
   states in both. The adapted pass replays only the blocks from the first adapted one, starting
   from M0's input to that block, with the arguments (attention mask, position embeddings) that
   the decoder passes to each block, recorded by forward pre-hooks. The replay needs the lower
   blocks to be deterministic. So models whose config enables dropout (GPT-2, for one) run M
   from the embeddings instead.
4. M0 never changes, so its states at the loss targets and its input to the first adapted block
   are computed once per example and kept in `FrozenStateCache` (on the CPU, up to a size
   limit). A batch whose examples are all cached needs no M0 pass: the block arguments come from
   a pass in which every block is temporarily replaced by the identity, which costs only the
   embedding lookup and the mask and position computations. Groups that need M0's logits (KL
   terms) do not use the cache, because logits over the vocabulary are too large to keep.

The frozen pass runs under `torch.no_grad()` in eval mode, with adapters disabled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from mosr.defenses.encoding import Batch
from mosr.defenses.lora import architecture_of
from mosr.representations import find_decoder_layers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassRequest:
    """The outputs that one group of examples needs from the forward passes."""

    states: bool = False
    """Adapted hidden states at the loss layers, at the target positions."""
    frozen_states: bool = False
    logits: bool = False
    """Adapted logits at the positions that predict the targets."""
    frozen_logits: bool = False


@dataclass
class PassOutputs:
    """Packed outputs for one batch: row k belongs to target k of the batch (see `Batch.sample_index`)."""

    batch: Batch
    states: torch.Tensor | None = None
    """[targets, loss layers, hidden] states of M."""
    frozen_states: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    """[targets, vocab] logits of M; row k predicts `batch.target_ids[k]`."""
    frozen_logits: torch.Tensor | None = None


@dataclass
class _FrozenEntry:
    first_block_input: torch.Tensor
    """[tokens, hidden] M0's input to the first adapted block at every position of the example."""
    target_states: torch.Tensor
    """[targets, loss layers, hidden] M0's states at the example's loss targets."""

    @property
    def nbytes(self) -> int:
        return (self.first_block_input.numel() * self.first_block_input.element_size()
                + self.target_states.numel() * self.target_states.element_size())


class FrozenStateCache:
    """M0's per-example states, keyed by example id, kept on the CPU up to `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.entries: dict[str, _FrozenEntry] = {}
        self.full_logged = False

    def get(self, key: str) -> _FrozenEntry | None:
        return self.entries.get(key)

    def put(self, key: str, entry: _FrozenEntry) -> bool:
        """Keep an entry unless the cache would exceed its size limit; return whether it was kept."""
        if self.used_bytes + entry.nbytes > self.max_bytes:
            if not self.full_logged:
                logger.info("frozen-state cache is full (%d MB): further examples are recomputed when drawn",
                            self.used_bytes // 2**20)
                self.full_logged = True
            return False
        self.entries[key] = _FrozenEntry(entry.first_block_input.cpu(), entry.target_states.cpu())
        self.used_bytes += entry.nbytes
        return True


class _StopForward(Exception):
    """Raised by a forward hook to end a pass once the deepest needed block has run."""


@dataclass
class _DecoderPass:
    states: dict[int, torch.Tensor]
    """[batch, positions, hidden] output of each loss layer that the pass reached."""
    last_hidden: torch.Tensor | None
    """[batch, positions, hidden] after the final norm; None when the pass stopped early."""
    block_calls: dict[int, tuple[tuple, dict]]
    """Positional and keyword arguments of each recorded block call."""
    first_input: torch.Tensor | None = None
    """[batch, positions, hidden] input of the first adapted block, when recorded."""


def _first_output(output):
    return output[0] if isinstance(output, tuple) else output


def _pass_through(hidden_states, *args, **kwargs):
    return hidden_states


def has_active_dropout(config) -> bool:
    """Return whether a transformers config sets a non-zero dropout probability inside the decoder."""
    for key, value in config.to_dict().items():
        if key.startswith(("classifier", "summary")):
            continue
        if ("dropout" in key or "pdrop" in key) and isinstance(value, float) and value > 0.0:
            return True
    return False


class ForwardRunner:
    """Run M and M0 on batches of a PeftModel and return packed states and logits at the loss targets."""

    def __init__(self, peft_model, *, loss_layers: list[int], lora_layers: list[int], cache_bytes: int = 0):
        self.model = peft_model
        causal_lm = peft_model.get_base_model()
        self.decoder = causal_lm.base_model
        self.blocks = find_decoder_layers(peft_model)
        self.final_norm = getattr(self.decoder, architecture_of(causal_lm).final_norm)
        self.lm_head = causal_lm.get_output_embeddings()
        self.logit_softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
        self.num_layers = len(self.blocks)
        self.loss_layers = list(loss_layers)
        self.first_adapted_block = min(lora_layers)
        self.share_lower_blocks = not has_active_dropout(causal_lm.config)
        self.cache = FrozenStateCache(cache_bytes) if cache_bytes > 0 and self.share_lower_blocks else None

    def run(self, batch: Batch, request: PassRequest) -> PassOutputs:
        """Run the passes that `request` needs on one batch."""
        needs_frozen = request.frozen_states or request.frozen_logits
        needs_adapted = request.states or request.logits
        replay = needs_frozen and needs_adapted and self.share_lower_blocks
        adapted_last_block = self._last_block(request.states, request.logits)
        cacheable = not request.frozen_logits and adapted_last_block >= self.first_adapted_block
        if replay and self.cache is not None and cacheable:
            return self._run_cached(batch, request, adapted_last_block)

        outputs = PassOutputs(batch=batch)
        frozen = None
        if needs_frozen:
            frozen_last_block = self._last_block(request.frozen_states, request.frozen_logits)
            if replay:
                frozen_last_block = max(frozen_last_block, adapted_last_block)
            frozen = self._frozen_pass(batch, frozen_last_block, record_calls=replay)
            if request.frozen_states:
                outputs.frozen_states = self._pack_states(frozen.states, batch)
            if request.frozen_logits:
                outputs.frozen_logits = self._logits(frozen.last_hidden, batch)

        if needs_adapted:
            if replay:
                adapted = self._replay(frozen, adapted_last_block, final_norm=request.logits)
            else:
                adapted = self._decoder_pass(batch, last_block=adapted_last_block)
            if request.states:
                outputs.states = self._pack_states(adapted.states, batch)
            if request.logits:
                outputs.logits = self._logits(adapted.last_hidden, batch)
        return outputs

    def _last_block(self, states: bool, logits: bool) -> int:
        if logits:
            return self.num_layers - 1
        if states:
            return max(self.loss_layers) - 1
        return -1

    def _run_cached(self, batch: Batch, request: PassRequest, adapted_last_block: int) -> PassOutputs:
        """Take M0's states from the cache (computing those of uncached examples first) and replay M."""
        device = batch.input_ids.device
        entries = self._frozen_entries(batch)
        outputs = PassOutputs(batch=batch)
        if request.frozen_states:
            outputs.frozen_states = torch.cat([entry.target_states for entry in entries]).to(device)

        hidden_size = entries[0].first_block_input.shape[-1]
        first_input = torch.zeros((*batch.input_ids.shape, hidden_size), dtype=entries[0].first_block_input.dtype,
                                  device=device)
        for row, entry in enumerate(entries):
            first_input[row, : len(entry.first_block_input)] = entry.first_block_input.to(device)
        calls = self._record_block_calls(batch, adapted_last_block)
        frozen = _DecoderPass(states={}, last_hidden=None, block_calls=calls, first_input=first_input)
        adapted = self._replay(frozen, adapted_last_block, final_norm=request.logits)

        if request.states:
            packed = []
            for index, layer in enumerate(self.loss_layers):
                if layer in adapted.states:
                    packed.append(adapted.states[layer][batch.target_mask])
                else:
                    # Below the first adapted block, M's state is M0's (and gets no gradient).
                    packed.append(torch.cat([entry.target_states[:, index] for entry in entries]).to(device))
            outputs.states = torch.stack(packed, dim=1)
        if request.logits:
            outputs.logits = self._logits(adapted.last_hidden, batch)
        return outputs

    def _frozen_entries(self, batch: Batch) -> list[_FrozenEntry]:
        """M0's entries for the batch's examples, in batch order; uncached ones are computed in one pass."""
        keys = [item.example.id for item in batch.examples]
        entries = [self.cache.get(key) for key in keys]
        missing = [row for row, entry in enumerate(entries) if entry is None]
        if not missing:
            return entries

        sub_batch = batch.select(missing)
        frozen = self._frozen_pass(sub_batch, max(self.loss_layers) - 1, record_calls=False, record_first_input=True)
        states = torch.stack([frozen.states[layer] for layer in self.loss_layers], dim=2)
        for sub_row, row in enumerate(missing):
            item = batch.examples[row]
            entry = _FrozenEntry(
                first_block_input=frozen.first_input[sub_row, : len(item.input_ids)],
                target_states=states[sub_row, item.target_start : item.target_end],
            )
            self.cache.put(keys[row], entry)
            entries[row] = entry
        return entries

    def _frozen_pass(self, batch: Batch, last_block: int, *, record_calls: bool,
                     record_first_input: bool = False) -> _DecoderPass:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.model.disable_adapter():
                return self._decoder_pass(
                    batch,
                    last_block=last_block,
                    record_calls_from=self.first_adapted_block if record_calls else None,
                    record_first_input=record_first_input,
                )
        finally:
            self.model.train(was_training)

    def _record_block_calls(self, batch: Batch, last_block: int) -> dict[int, tuple[tuple, dict]]:
        """Record the arguments of the adapted blocks up to `last_block`, with every block replaced by the identity."""
        saved = {}
        for index, block in enumerate(self.blocks):
            # Accelerate's device hooks set `forward` on the instance; put back whatever was there.
            if "forward" in block.__dict__:
                saved[index] = block.__dict__["forward"]
            block.forward = _pass_through
        try:
            with torch.no_grad():
                return self._decoder_pass(batch, last_block=last_block, record_calls_from=self.first_adapted_block,
                                          stop_before_last=True).block_calls
        finally:
            for index, block in enumerate(self.blocks):
                if index in saved:
                    block.forward = saved[index]
                else:
                    del block.forward

    def _decoder_pass(
        self,
        batch: Batch,
        *,
        last_block: int,
        record_calls_from: int | None = None,
        record_first_input: bool = False,
        stop_before_last: bool = False,
    ) -> _DecoderPass:
        """Run the decoder up to `last_block`, through the final norm when it is the model's last block.

        With `stop_before_last`, the pass ends as soon as the arguments of `last_block` are recorded.
        """
        result = _DecoderPass(states={}, last_hidden=None, block_calls={})
        handles = []

        def capture(layer):
            def hook(module, args, output):
                result.states[layer] = _first_output(output)
            return hook

        def record(block_index):
            def hook(module, args, kwargs):
                result.block_calls[block_index] = (args, kwargs)
                if stop_before_last and block_index == last_block:
                    raise _StopForward
            return hook

        def record_input(module, args, kwargs):
            result.first_input = args[0]

        def stop(module, args, output):
            raise _StopForward

        try:
            if not stop_before_last:
                for layer in self.loss_layers:
                    if layer - 1 <= last_block:
                        handles.append(self.blocks[layer - 1].register_forward_hook(capture(layer)))
            if record_calls_from is not None:
                for block_index in range(record_calls_from, last_block + 1):
                    handles.append(self.blocks[block_index].register_forward_pre_hook(record(block_index),
                                                                                      with_kwargs=True))
            if record_first_input:
                handles.append(self.blocks[self.first_adapted_block].register_forward_pre_hook(record_input,
                                                                                               with_kwargs=True))
            if not stop_before_last and last_block < self.num_layers - 1:
                handles.append(self.blocks[last_block].register_forward_hook(stop))
            try:
                output = self.decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
                result.last_hidden = output.last_hidden_state
            except _StopForward:
                pass
        finally:
            for handle in handles:
                handle.remove()
        return result

    def _replay(self, frozen: _DecoderPass, last_block: int, *, final_norm: bool) -> _DecoderPass:
        """Run the adapted blocks from M0's input to the first of them, with the recorded arguments."""
        first = self.first_adapted_block
        # Loss layers below the first adapted block are the same in M and M0 and get no gradient.
        states = {layer: state for layer, state in frozen.states.items() if layer - 1 < first}
        if last_block < first:
            return _DecoderPass(states=states, last_hidden=None, block_calls={})
        hidden = frozen.first_input if frozen.first_input is not None else frozen.block_calls[first][0][0]
        for block_index in range(first, last_block + 1):
            args, kwargs = frozen.block_calls[block_index]
            hidden = _first_output(self.blocks[block_index](hidden, *args[1:], **kwargs))
            if block_index + 1 in self.loss_layers:
                states[block_index + 1] = hidden
        last_hidden = self.final_norm(hidden) if final_norm else None
        return _DecoderPass(states=states, last_hidden=last_hidden, block_calls={})

    def _pack_states(self, states: dict[int, torch.Tensor], batch: Batch) -> torch.Tensor:
        return torch.stack([states[layer][batch.target_mask] for layer in self.loss_layers], dim=1)

    def _logits(self, last_hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        logits = self.lm_head(last_hidden[batch.prediction_mask])
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits
