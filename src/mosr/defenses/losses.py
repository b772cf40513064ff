"""Loss terms of the defenses, as pure functions on packed response-token tensors.

Every function takes the tokens that a loss applies to in packed form: row k of `states`
(shape [tokens, layers, hidden]) or `logits` (shape [tokens, vocab]) belongs to sample
`sample_index[k]` of a batch of `batch_size` samples. `states[k, j]` is the hidden state of that
token at the j-th loss layer. `pack_tokens` turns a padded [batch, positions, ...] tensor and a
boolean mask into this form, so padding never enters a computation (a padded position may hold
NaN, and NaN times a zero mask is still NaN).

Reduction, the same for every term: the token values of a sample are averaged over its tokens
and loss layers, giving one value per sample. A sample without tokens (its response was cut off
by the length limit) gets 0. The batch value is `sum_i w_i * value_i / batch_size`, where `w` are
the per-sample weights (all 1 unless given), so an empty sample still counts in the denominator.
Published implementations average over all tokens of the batch instead. Averaging per sample
first is this project's choice, because then a per-sample weight scales one sample's whole
contribution whatever its length.

All arithmetic is in float32, whatever the input dtype, and cosines use `EPSILON` in their
denominators, so the terms stay finite for zero vectors and bfloat16 inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPSILON = 1e-8


def pack_tokens(padded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Select the masked positions of a [batch, positions, ...] tensor.

    Returns the selected rows, in row-major order, and the batch row each one came from.
    """
    mask = mask.bool()
    rows = torch.nonzero(mask, as_tuple=True)[0]
    return padded[mask], rows


def mean_per_sample(token_values: torch.Tensor, sample_index: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Average token values per sample, giving a [batch_size] float32 tensor with 0 for samples without tokens."""
    token_values = token_values.float()
    sums = torch.zeros(batch_size, dtype=torch.float32, device=token_values.device)
    sums = sums.index_add(0, sample_index, token_values)
    counts = torch.bincount(sample_index, minlength=batch_size).to(torch.float32)
    return sums / counts.clamp(min=1.0)


def reduce_batch(per_sample: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of per-sample values divided by the batch size (samples without tokens included)."""
    if weights is None:
        return per_sample.mean()
    weights = weights.to(device=per_sample.device, dtype=torch.float32)
    if weights.shape != per_sample.shape:
        raise ValueError(f"expected one weight per sample ({tuple(per_sample.shape)}), got shape {tuple(weights.shape)}")
    return (weights * per_sample).sum() / per_sample.numel()


def cosine_similarity(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension in float32: `a·b / (max(|a|, eps) · max(|b|, eps))`.

    A zero vector has similarity 0 with anything, and the gradient stays finite there.
    """
    first = first.float()
    second = second.float()
    dot = (first * second).sum(dim=-1)
    first_norm = torch.linalg.vector_norm(first, dim=-1).clamp(min=EPSILON)
    second_norm = torch.linalg.vector_norm(second, dim=-1).clamp(min=EPSILON)
    return dot / (first_norm * second_norm)


def _check_states(states: torch.Tensor, frozen_states: torch.Tensor, sample_index: torch.Tensor) -> None:
    if states.shape != frozen_states.shape:
        raise ValueError(f"adapted states {tuple(states.shape)} and frozen states {tuple(frozen_states.shape)} differ in shape")
    if states.dim() != 3:
        raise ValueError(f"expected states of shape [tokens, layers, hidden], got {tuple(states.shape)}")
    if sample_index.shape != states.shape[:1]:
        raise ValueError(f"expected one sample index per token ({states.shape[0]}), got shape {tuple(sample_index.shape)}")


def reroute_loss(
    states: torch.Tensor,
    frozen_states: torch.Tensor,
    sample_index: torch.Tensor,
    batch_size: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Circuit-breaker rerouting: `relu(cos(h_M, h_M0))` per token and loss layer.

    The term is 0 once the adapted state is orthogonal or opposite to the frozen model's state.
    """
    _check_states(states, frozen_states, sample_index)
    per_token = torch.relu(cosine_similarity(states, frozen_states)).mean(dim=-1)
    return reduce_batch(mean_per_sample(per_token, sample_index, batch_size), weights)


def retain_loss(
    states: torch.Tensor,
    frozen_states: torch.Tensor,
    sample_index: torch.Tensor,
    batch_size: int,
    weights: torch.Tensor | None = None,
    *,
    relative: bool = False,
) -> torch.Tensor:
    """Representation retain: the L2 distance `||h_M - h_M0||_2` per token and loss layer.

    With `relative`, the distance is divided by `||h_M0||_2`, which makes the term independent of
    the scale of the model's hidden states.
    """
    _check_states(states, frozen_states, sample_index)
    # vector_norm's gradient at a zero difference is 0, not NaN, so the untrained start is safe.
    distance = torch.linalg.vector_norm(states.float() - frozen_states.float(), dim=-1)
    if relative:
        distance = distance / torch.linalg.vector_norm(frozen_states.float(), dim=-1).clamp(min=EPSILON)
    per_token = distance.mean(dim=-1)
    return reduce_batch(mean_per_sample(per_token, sample_index, batch_size), weights)


def bend_push_loss(
    states: torch.Tensor,
    frozen_states: torch.Tensor,
    sample_index: torch.Tensor,
    batch_size: int,
    weights: torch.Tensor | None = None,
    *,
    max_distance: float = 1.5,
) -> torch.Tensor:
    """RepBend push term: `-min(||h_M - h_M0||_2 / ||h_M0||_2, max_distance)` per token and loss layer.

    Minimising it moves the adapted state away from the frozen one. The distance is relative to
    the frozen state's norm and capped at `max_distance`, so the term is bounded below by
    `-max_distance` and cannot reward ever larger hidden states (the uncapped negative distance can).
    """
    _check_states(states, frozen_states, sample_index)
    distance = torch.linalg.vector_norm(states.float() - frozen_states.float(), dim=-1)
    reference = torch.linalg.vector_norm(frozen_states.float(), dim=-1).clamp(min=EPSILON)
    per_token = -(distance / reference).clamp(max=max_distance).mean(dim=-1)
    return reduce_batch(mean_per_sample(per_token, sample_index, batch_size), weights)


def bend_pull_loss(
    states: torch.Tensor,
    sample_index: torch.Tensor,
    batch_size: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """RepBend pull term: one minus the mean cosine similarity between the states of different samples.

    For each loss layer, each sample's states are averaged over its tokens, and the cosine
    similarity of every pair of distinct samples that have tokens is taken. Pair (i, j) has weight
    `w_i * w_j`. The term is `1 - weighted mean similarity`, averaged over loss layers, so
    minimising it pulls the samples' states together. With fewer than two samples that have
    tokens there is no pair and the term is 0.
    """
    if states.dim() != 3:
        raise ValueError(f"expected states of shape [tokens, layers, hidden], got {tuple(states.shape)}")
    device = states.device
    if weights is None:
        weights = torch.ones(batch_size, dtype=torch.float32, device=device)
    weights = weights.to(device=device, dtype=torch.float32)

    counts = torch.bincount(sample_index, minlength=batch_size)
    present = counts > 0
    if int(present.sum()) < 2:
        return torch.zeros((), dtype=torch.float32, device=device)

    # [batch, layers, hidden]: each sample's mean state per layer.
    sums = torch.zeros((batch_size, *states.shape[1:]), dtype=torch.float32, device=device)
    sums = sums.index_add(0, sample_index, states.float())
    means = sums[present] / counts[present].to(torch.float32)[:, None, None]
    kept_weights = weights[present]

    # [layers, samples, samples] cosine similarities.
    per_layer = means.transpose(0, 1)
    similarity = cosine_similarity(per_layer[:, :, None, :], per_layer[:, None, :, :])
    pair_weights = kept_weights[:, None] * kept_weights[None, :]
    pair_weights = pair_weights * (1.0 - torch.eye(len(kept_weights), device=device))
    total_weight = pair_weights.sum().clamp(min=EPSILON)
    mean_similarity = (similarity * pair_weights).sum(dim=(1, 2)) / total_weight
    return (1.0 - mean_similarity).mean()


def kl_loss(
    logits: torch.Tensor,
    frozen_logits: torch.Tensor,
    sample_index: torch.Tensor,
    batch_size: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(p_M0 || p_M) of the next-token distributions at each response position."""
    if logits.shape != frozen_logits.shape:
        raise ValueError(f"adapted logits {tuple(logits.shape)} and frozen logits {tuple(frozen_logits.shape)} differ in shape")
    log_probs = F.log_softmax(logits.float(), dim=-1)
    frozen_log_probs = F.log_softmax(frozen_logits.float(), dim=-1)
    per_token = F.kl_div(log_probs, frozen_log_probs, log_target=True, reduction="none").sum(dim=-1)
    return reduce_batch(mean_per_sample(per_token, sample_index, batch_size), weights)


def cross_entropy_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    sample_index: torch.Tensor,
    batch_size: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Token cross-entropy of `targets` under `logits` (row k predicts `targets[k]`)."""
    if logits.shape[:1] != targets.shape:
        raise ValueError(f"expected one target per logits row ({logits.shape[0]}), got shape {tuple(targets.shape)}")
    per_token = F.cross_entropy(logits.float(), targets, reduction="none")
    return reduce_batch(mean_per_sample(per_token, sample_index, batch_size), weights)
