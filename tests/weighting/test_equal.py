"""Equal weighting: the plain sum of the present tasks' losses, weights 1."""

import pytest
import torch
from torch import Tensor, nn

from attnmtl.weighting import EqualWeighting, StepContext


def context(scale=None) -> StepContext:
    if scale is None:
        return StepContext(shared_parameters=[], features=None, step=0, epoch=0)
    return StepContext(shared_parameters=[], features=None, step=0, epoch=0, scale=scale)


def test_total_is_the_sum_and_gradients_are_unweighted():
    a, b = nn.Parameter(torch.tensor(2.0)), nn.Parameter(torch.tensor(-1.0))
    seen: list[Tensor] = []
    weights = EqualWeighting(["x", "y"]).backward(
        {"x": 3 * a, "y": b**2}, context(lambda t: seen.append(t.detach()) or t)
    )
    assert seen[0].item() == pytest.approx(6.0 + 1.0)
    assert a.grad.item() == pytest.approx(3.0)  # d(3a)/da
    assert b.grad.item() == pytest.approx(-2.0)  # d(b²)/db at b = -1
    assert {t: w.item() for t, w in weights.items()} == {"x": 1.0, "y": 1.0}


def test_the_context_scale_is_applied_before_backward():
    a = nn.Parameter(torch.tensor(2.0))
    EqualWeighting(["x"]).backward({"x": 3 * a}, context(lambda t: 10 * t))
    assert a.grad.item() == pytest.approx(30.0)


def test_sum_not_mean_over_present_tasks():
    """A task's gradient does not shrink when more tasks share the batch."""
    a, b = nn.Parameter(torch.tensor(1.0)), nn.Parameter(torch.tensor(1.0))
    EqualWeighting(["x", "y", "z"]).backward({"x": 5 * a, "y": 7 * b}, context())
    assert (a.grad.item(), b.grad.item()) == (5.0, 7.0)


def test_empty_or_unknown_losses_are_rejected():
    weighting = EqualWeighting(["x"])
    with pytest.raises(ValueError, match="losses is empty"):
        weighting.backward({}, context())
    with pytest.raises(ValueError, match="'q'"):
        weighting.backward({"q": torch.tensor(1.0, requires_grad=True)}, context())
