"""Constant weights, GLS and the scale-invariant log sum against their definitions, on
hand-computed losses and gradients."""

import math

import pytest
import torch
from torch import nn

from attnmtl.weighting import (
    ConstantWeighting,
    GeometricLossStrategy,
    ScaleInvariantWeighting,
    StepContext,
    create_weighting,
)


def context(seen=None) -> StepContext:
    scale = (lambda t: seen.append(t.detach()) or t) if seen is not None else (lambda t: t)
    return StepContext(shared_parameters=[], features=None, step=0, epoch=0, scale=scale)


def params():
    return nn.Parameter(torch.tensor(2.0)), nn.Parameter(torch.tensor(3.0))


def test_constant_weights_scale_each_task_and_default_to_one():
    a, b = params()
    seen = []
    weighting = ConstantWeighting(["x", "y", "z"], weights={"x": 0.25})
    weights = weighting.backward({"x": a**2, "y": 5 * b}, context(seen))
    assert seen[0].item() == pytest.approx(0.25 * 4 + 15)
    assert a.grad.item() == pytest.approx(0.25 * 2 * 2.0)  # 0.25 · d(a²)/da
    assert b.grad.item() == pytest.approx(5.0)
    assert {t: w.item() for t, w in weights.items()} == {"x": 0.25, "y": 1.0}


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"q": 1.0}, r"weights for \['q'\]; expected some of the tasks \['x', 'y'\]"),
        ({"x": -1.0}, r"weights.x=-1.0; expected a finite number >= 0"),
        ({"x": math.inf}, r"weights.x=inf"),
        ({"x": "big"}, r"weights.x='big'; expected a number >= 0"),
    ],
)
def test_bad_constant_weights_are_one_line(weights, match):
    with pytest.raises(ValueError, match=match):
        create_weighting("constant", ["x", "y"], weights=weights)


def test_gls_is_the_geometric_mean_and_weighs_by_its_partials():
    a, b = params()
    seen = []
    weights = GeometricLossStrategy(["x", "y"]).backward({"x": a**2, "y": 4 * b}, context(seen))
    total = math.sqrt(4.0 * 12.0)  # (L_x L_y)^(1/2) = (4 · 12)^(1/2)
    assert seen[0].item() == pytest.approx(total)
    # dL/da = L / (2 L_x) · dL_x/da = total / 8 · 4
    assert a.grad.item() == pytest.approx(total / 8 * 4)
    assert b.grad.item() == pytest.approx(total / 24 * 4)
    assert weights["x"].item() == pytest.approx(total / 8)
    assert weights["y"].item() == pytest.approx(total / 24)


def test_gls_gradient_direction_does_not_depend_on_a_tasks_scale():
    """Scaling L_y by c scales L by sqrt(c): every gradient by the same factor."""

    def grads(scale):
        a, b = params()
        GeometricLossStrategy(["x", "y"]).backward({"x": a**2, "y": scale * b}, context())
        return a.grad.item(), b.grad.item()

    (a1, b1), (a2, b2) = grads(1.0), grads(1000.0)
    assert a1 / b1 == pytest.approx(a2 / b2)
    assert a2 == pytest.approx(a1 * math.sqrt(1000.0))


def test_scale_invariant_gradient_is_unchanged_by_a_loss_scale():
    grads = []
    for scale in (1.0, 1e4):
        a, b = params()
        seen = []
        weights = ScaleInvariantWeighting(["x", "y"]).backward(
            {"x": scale * a**2, "y": 4 * b}, context(seen)
        )
        assert seen[0].item() == pytest.approx(math.log(scale * 4.0) + math.log(12.0))
        assert weights["x"].item() == pytest.approx(1 / (scale * 4.0))
        grads.append((a.grad.item(), b.grad.item()))
    # d log(c a²)/da = 2/a = 1 whatever c; d log(4b)/db = 1/b
    assert grads[0] == pytest.approx((1.0, 1 / 3)) and grads[1] == pytest.approx(grads[0])


@pytest.mark.parametrize("cls", [GeometricLossStrategy, ScaleInvariantWeighting])
def test_a_zero_loss_is_floored_not_infinite(cls):
    a = nn.Parameter(torch.tensor(0.0))
    b = nn.Parameter(torch.tensor(1.0))
    weights = cls(["x", "y"]).backward({"x": a**2, "y": b**2}, context())
    assert all(torch.isfinite(w) for w in weights.values())
    assert math.isfinite(a.grad.item()) and math.isfinite(b.grad.item())
