import math

import pytest
import torch

from mosr.defenses import losses


def _states(*rows):
    """Packed states [tokens, 1 layer, hidden] from plain rows."""
    return torch.tensor(rows, dtype=torch.float32)[:, None, :]


def test_pack_tokens_selects_masked_rows():
    padded = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[False, True, True], [True, False, False]])
    values, rows = losses.pack_tokens(padded, mask)
    assert values.tolist() == [[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
    assert rows.tolist() == [0, 0, 1]


def test_mean_per_sample_gives_zero_to_empty():
    values = torch.tensor([1.0, 3.0, 5.0])
    per_sample = losses.mean_per_sample(values, torch.tensor([0, 0, 2]), 3)
    assert per_sample.tolist() == [2.0, 0.0, 5.0]


def test_reduce_batch_counts_empty_samples():
    per_sample = torch.tensor([2.0, 0.0, 5.0])
    assert losses.reduce_batch(per_sample).item() == pytest.approx(7.0 / 3)
    weights = torch.tensor([0.5, 1.0, 2.0])
    assert losses.reduce_batch(per_sample, weights).item() == pytest.approx((1.0 + 10.0) / 3)


def test_reduce_batch_rejects_wrong_weight_shape():
    with pytest.raises(ValueError, match="one weight per sample"):
        losses.reduce_batch(torch.zeros(3), torch.ones(2))


def test_reroute_known_values():
    frozen = _states([1.0, 0.0], [1.0, 0.0], [1.0, 0.0])
    same = _states([2.0, 0.0], [1.0, 0.0], [1.0, 0.0])
    assert losses.reroute_loss(same, frozen, torch.tensor([0, 0, 0]), 1).item() == pytest.approx(1.0)

    # cos 1, 0 and -1: relu gives 1, 0, 0, one token per sample.
    mixed = _states([3.0, 0.0], [0.0, 1.0], [-1.0, 0.0])
    value = losses.reroute_loss(mixed, frozen, torch.tensor([0, 1, 2]), 3)
    assert value.item() == pytest.approx(1.0 / 3)

    # 45 degrees: cos = 1/sqrt(2).
    tilted = _states([1.0, 1.0])
    assert losses.reroute_loss(tilted, _states([1.0, 0.0]), torch.tensor([0]), 1).item() == pytest.approx(
        1 / math.sqrt(2), rel=1e-6
    )


def test_reroute_averages_layers_and_weights_samples():
    # Two tokens of sample 0, two loss layers: layer 0 aligned (1), layer 1 orthogonal (0).
    frozen = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]])
    states = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    value = losses.reroute_loss(states, frozen, torch.tensor([0, 0]), 2, torch.tensor([3.0, 1.0]))
    assert value.item() == pytest.approx(3.0 * 0.5 / 2)


def test_retain_known_values():
    frozen = _states([0.0, 0.0], [1.0, 1.0])
    states = _states([3.0, 4.0], [1.0, 1.0])
    assert losses.retain_loss(states, frozen, torch.tensor([0, 1]), 2).item() == pytest.approx(2.5)
    assert losses.retain_loss(states, frozen, torch.tensor([0, 0]), 1).item() == pytest.approx(2.5)


def test_relative_retain_known_values():
    frozen = _states([3.0, 4.0], [0.0, 2.0])
    states = _states([6.0, 8.0], [0.0, 1.0])
    # Distances 5 and 1 over frozen norms 5 and 2.
    value = losses.retain_loss(states, frozen, torch.tensor([0, 1]), 2, relative=True)
    assert value.item() == pytest.approx((1.0 + 0.5) / 2)


def test_bend_push_known_values_and_cap():
    frozen = _states([1.0, 0.0], [1.0, 0.0])
    states = _states([1.0, 1.0], [11.0, 0.0])
    # Relative distances 1 and 10; the second is capped at 1.5.
    value = losses.bend_push_loss(states, frozen, torch.tensor([0, 1]), 2, max_distance=1.5)
    assert value.item() == pytest.approx(-(1.0 + 1.5) / 2)


def test_bend_pull_known_values():
    aligned = _states([1.0, 0.0], [2.0, 0.0])
    assert losses.bend_pull_loss(aligned, torch.tensor([0, 1]), 2).item() == pytest.approx(0.0, abs=1e-6)
    orthogonal = _states([1.0, 0.0], [0.0, 1.0])
    assert losses.bend_pull_loss(orthogonal, torch.tensor([0, 1]), 2).item() == pytest.approx(1.0)
    opposite = _states([1.0, 0.0], [-1.0, 0.0])
    assert losses.bend_pull_loss(opposite, torch.tensor([0, 1]), 2).item() == pytest.approx(2.0)


def test_bend_pull_averages_tokens_then_weights_pairs():
    # Sample 0's tokens average to (1, 0); samples 1 and 2 are (1, 0) and (0, 1).
    states = _states([1.0, 1.0], [1.0, -1.0], [1.0, 0.0], [0.0, 1.0])
    index = torch.tensor([0, 0, 1, 2])
    # Pair similarities: (0,1) 1, (0,2) 0, (1,2) 0.
    assert losses.bend_pull_loss(states, index, 3).item() == pytest.approx(1.0 - 1.0 / 3)
    # Weight 0 on sample 2 leaves only pair (0,1).
    weights = torch.tensor([1.0, 1.0, 0.0])
    assert losses.bend_pull_loss(states, index, 3, weights).item() == pytest.approx(0.0, abs=1e-6)


def test_bend_pull_needs_two_samples():
    assert losses.bend_pull_loss(_states([1.0, 0.0]), torch.tensor([0]), 1).item() == 0.0
    # Two samples, one of them empty.
    assert losses.bend_pull_loss(_states([1.0, 0.0]), torch.tensor([1]), 2).item() == 0.0


def test_kl_known_value():
    frozen = torch.tensor([[0.0, 0.0]])
    logits = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert losses.kl_loss(logits, frozen, torch.tensor([0]), 1).item() == pytest.approx(expected, rel=1e-5)
    assert losses.kl_loss(frozen, frozen, torch.tensor([0]), 1).item() == pytest.approx(0.0, abs=1e-7)


def test_cross_entropy_known_value():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([0, 0])
    value = losses.cross_entropy_loss(logits, targets, torch.tensor([0, 1]), 2)
    assert value.item() == pytest.approx((math.log(2.0) + math.log(4.0 / 3.0)) / 2, rel=1e-6)


def _all_terms(states, frozen, logits, frozen_logits, targets, index, batch_size):
    return {
        "reroute": losses.reroute_loss(states, frozen, index, batch_size),
        "retain": losses.retain_loss(states, frozen, index, batch_size),
        "relative_retain": losses.retain_loss(states, frozen, index, batch_size, relative=True),
        "push": losses.bend_push_loss(states, frozen, index, batch_size),
        "pull": losses.bend_pull_loss(states, index, batch_size),
        "kl": losses.kl_loss(logits, frozen_logits, index, batch_size),
        "cross_entropy": losses.cross_entropy_loss(logits, targets, index, batch_size),
    }


def test_losses_finite_for_zero_vectors():
    states = torch.zeros(3, 2, 4, requires_grad=True)
    frozen = torch.zeros(3, 2, 4)
    logits = torch.zeros(3, 5, requires_grad=True)
    index = torch.tensor([0, 0, 1])
    for name, value in _all_terms(states, frozen, logits, logits.detach(), torch.tensor([1, 2, 3]), index, 2).items():
        assert torch.isfinite(value), name
        value.backward(retain_graph=True)
        for tensor in (states, logits):
            assert tensor.grad is None or torch.isfinite(tensor.grad).all(), name


def test_losses_finite_for_identical_states():
    # The untrained start: adapted and frozen states are equal, so distances are exactly zero.
    frozen = torch.randn(4, 2, 8)
    states = frozen.clone().requires_grad_(True)
    for name in ("reroute", "retain", "push"):
        value = getattr(losses, f"{'bend_push' if name == 'push' else name}_loss")(
            states, frozen, torch.tensor([0, 0, 1, 1]), 2
        )
        value.backward()
        assert torch.isfinite(value), name
        assert torch.isfinite(states.grad).all(), name
        states.grad = None


def test_losses_zero_for_empty_masks():
    states = torch.zeros(0, 2, 4, requires_grad=True)
    logits = torch.zeros(0, 5, requires_grad=True)
    index = torch.zeros(0, dtype=torch.long)
    for name, value in _all_terms(states, states.detach(), logits, logits.detach(), index, index, 3).items():
        assert value.item() == 0.0, name
        assert torch.isfinite(value), name


def test_losses_with_batch_of_one():
    states = torch.randn(5, 2, 4)
    frozen = torch.randn(5, 2, 4)
    logits = torch.randn(5, 7)
    index = torch.zeros(5, dtype=torch.long)
    for name, value in _all_terms(states, frozen, logits, torch.randn(5, 7), torch.randint(0, 7, (5,)), index, 1).items():
        assert torch.isfinite(value), name
        assert value.dtype == torch.float32, name


def test_losses_in_bfloat16_match_float32():
    torch.manual_seed(0)
    states = torch.randn(6, 2, 16)
    frozen = states + 0.3 * torch.randn(6, 2, 16)
    logits = torch.randn(6, 11)
    frozen_logits = logits + 0.5 * torch.randn(6, 11)
    targets = torch.randint(0, 11, (6,))
    index = torch.tensor([0, 0, 1, 1, 2, 2])
    reference = _all_terms(states, frozen, logits, frozen_logits, targets, index, 3)
    low = _all_terms(states.bfloat16(), frozen.bfloat16(), logits.bfloat16(), frozen_logits.bfloat16(), targets, index, 3)
    for name, value in low.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
        assert value.item() == pytest.approx(reference[name].item(), rel=0.05, abs=0.02), name


def test_state_shapes_checked():
    with pytest.raises(ValueError, match="differ in shape"):
        losses.retain_loss(torch.zeros(2, 1, 3), torch.zeros(2, 1, 4), torch.tensor([0, 0]), 1)
    with pytest.raises(ValueError, match="one sample index per token"):
        losses.reroute_loss(torch.zeros(2, 1, 3), torch.zeros(2, 1, 3), torch.tensor([0]), 1)
