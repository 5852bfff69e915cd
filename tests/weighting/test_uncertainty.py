"""Uncertainty weighting (Kendall et al., CVPR 2018): L = Σ L_k / (2 exp(s_k)) + s_k / 2."""

import math

import pytest
import torch
from torch import Tensor, nn

from attnmtl.weighting import StepContext, UncertaintyWeighting


def context(scale=None) -> StepContext:
    if scale is None:
        return StepContext(shared_parameters=[], features=None, step=0, epoch=0)
    return StepContext(shared_parameters=[], features=None, step=0, epoch=0, scale=scale)


def test_value_and_gradients_at_the_default_init():
    """s = -0.5, L = 2p with p = 1 (so L = 2)."""
    weighting = UncertaintyWeighting(["x"])
    p = nn.Parameter(torch.tensor(1.0))
    seen: list[Tensor] = []
    weights = weighting.backward({"x": 2 * p}, context(lambda t: seen.append(t.detach()) or t))
    # L = 2 / (2 e^-0.5) - 0.25 = e^0.5 - 0.25
    assert seen[0].item() == pytest.approx(1.3987212707, abs=1e-6)
    # dL/ds = -L / (2 e^s) + 1/2 = 0.5 - e^0.5
    assert weighting.log_vars[0].grad.item() == pytest.approx(-1.1487212707, abs=1e-6)
    # reported weight 1 / (2 e^s) = e^0.5 / 2; dL/dp = 2 × weight
    assert weights["x"].item() == pytest.approx(0.8243606354, abs=1e-6)
    assert p.grad.item() == pytest.approx(1.6487212707, abs=1e-6)
    assert not weights["x"].requires_grad


def test_each_task_has_its_own_log_variance():
    weighting = UncertaintyWeighting(["x", "y"], init_log_var=0.0)
    with torch.no_grad():
        weighting.log_vars[1].fill_(math.log(2.0))
    seen: list[Tensor] = []
    weights = weighting.backward(
        {"x": torch.tensor(2.0, requires_grad=True), "y": torch.tensor(4.0, requires_grad=True)},
        context(lambda t: seen.append(t.detach()) or t),
    )
    # 2/(2·1) + 0 + 4/(2·2) + ln2/2
    assert seen[0].item() == pytest.approx(2.0 + 0.5 * math.log(2.0), abs=1e-6)
    assert weights["x"].item() == pytest.approx(0.5)
    assert weights["y"].item() == pytest.approx(0.25)
    # dL/ds_y = -4 / (2·2) + 1/2
    assert weighting.log_vars[1].grad.item() == pytest.approx(-0.5, abs=1e-6)


def test_an_absent_task_log_variance_gets_no_gradient():
    weighting = UncertaintyWeighting(["x", "y"])
    weighting.backward({"y": torch.tensor(3.0, requires_grad=True)}, context())
    assert weighting.log_vars[0].grad is None
    assert weighting.log_vars[1].grad is not None


def test_init_must_be_finite():
    assert UncertaintyWeighting(["x"], init_log_var=1.5).log_vars[0].item() == 1.5
    with pytest.raises(ValueError, match="init_log_var=inf"):
        UncertaintyWeighting(["x"], init_log_var=math.inf)
