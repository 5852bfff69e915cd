"""FAMO (Liu et al., NeurIPS 2023): the combined gradient and the logit update, by hand.

Combined loss Σ z_k log D_k / c, D_k = L_k - L_k* + ε, c = Σ z_k / D_k (held constant), so the
gradient is Σ_k z_k / (c D_k) ∇L_k; after the step, ξ moves by Adam on z ⊙ (δ - zᵀδ), with
δ_k = log D_k(t) - log D_k(t+1).
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnmtl.weighting import FAMO, StepContext


def context(scale=None) -> StepContext:
    if scale is None:
        return StepContext(shared_parameters=[], features=None, step=0, epoch=0)
    return StepContext(shared_parameters=[], features=None, step=0, epoch=0, scale=scale)


def test_one_step_by_hand():
    famo = FAMO(["x", "y"])
    a, b = nn.Parameter(torch.tensor(2.0)), nn.Parameter(torch.tensor(1.0))
    seen: list[Tensor] = []
    weights = famo.backward({"x": a**2, "y": b**2}, context(lambda t: seen.append(t.detach()) or t))
    # z = (1/2, 1/2), L = (4, 1): c = 1/8 + 1/2 = 5/8, weights z / (c L) = (0.2, 0.8)
    assert weights["x"].item() == pytest.approx(0.2, abs=1e-6)
    assert weights["y"].item() == pytest.approx(0.8, abs=1e-6)
    assert seen[0].item() == pytest.approx(0.5 * math.log(4.0) / 0.625, abs=1e-6)
    assert a.grad.item() == pytest.approx(0.2 * 2 * 2.0, abs=1e-6)  # w_x ∂(a²)/∂a
    assert b.grad.item() == pytest.approx(0.8 * 2 * 1.0, abs=1e-6)
    # after the step the losses are (2, 0.25): δ = (ln 2, ln 4), zᵀδ = 1.5 ln 2,
    # grad ξ = z ⊙ (δ - zᵀδ) = (-ln2/4, +ln2/4); Adam's first step is lr · g / |g|
    famo.after_step(lambda: {"x": torch.tensor(2.0), "y": torch.tensor(0.25)})
    torch.testing.assert_close(famo.logits, torch.tensor([0.025, -0.025]), atol=1e-7, rtol=0)
    assert famo.adam_steps.tolist() == [1, 1]
    # the task whose loss fell faster (y) now gets less of the combination
    weights = famo.backward({"x": a**2, "y": b**2}, context())
    z = torch.softmax(torch.tensor([0.025, -0.025]), dim=0)
    c = z[0] / 4 + z[1] / 1
    assert weights["x"].item() == pytest.approx((z[0] / (c * 4)).item(), abs=1e-6)


def test_logits_and_min_losses_enter_the_weights():
    famo = FAMO(["x", "y"], min_losses=[2.0, 0.0])
    # L = (4, 1), D = (2, 1): c = 1/4 + 1/2, weights = (1/3, 2/3)
    weights = famo.backward(
        {"x": torch.tensor(4.0, requires_grad=True), "y": torch.tensor(1.0, requires_grad=True)},
        context(),
    )
    assert weights["x"].item() == pytest.approx(1 / 3, abs=1e-6)
    famo = FAMO(["x", "y"])
    famo.logits.copy_(torch.tensor([math.log(3.0), 0.0]))  # z = (3/4, 1/4)
    ones = {t: torch.tensor(1.0, requires_grad=True) for t in "xy"}
    weights = famo.backward(ones, context())
    assert weights["x"].item() == pytest.approx(0.75, abs=1e-6)
    assert ones["y"].grad.item() == pytest.approx(0.25, abs=1e-6)


def test_logit_updates_follow_torch_adam_on_the_official_gradient():
    """Several steps, weight decay included, against torch.optim.Adam on autograd's gradient."""
    famo = FAMO(["x", "y", "z"], lr=0.1, weight_decay=0.05)
    xi = torch.zeros(3, requires_grad=True)
    reference = torch.optim.Adam([xi], lr=0.1, weight_decay=0.05)
    history = [(3.0, 2.0, 1.0), (2.5, 1.0, 0.9), (2.4, 0.6, 0.5), (1.0, 0.5, 0.45)]
    for before, after in itertools.pairwise(history):
        old = zip("xyz", before, strict=True)
        famo.backward({t: torch.tensor(v, requires_grad=True) for t, v in old}, context())
        new = {t: torch.tensor(v) for t, v in zip("xyz", after, strict=True)}
        famo.after_step(lambda new=new: new)
        delta = torch.tensor(before).log() - torch.tensor(after).log()
        reference.zero_grad()
        (xi.grad,) = torch.autograd.grad(F.softmax(xi, -1), xi, grad_outputs=delta)
        reference.step()
        torch.testing.assert_close(famo.logits, xi.detach(), atol=1e-6, rtol=1e-5)
    assert famo.logits[1] < famo.logits[2]  # y's loss fell fastest


def test_an_absent_task_keeps_its_logit_and_optimizer_state():
    famo = FAMO(["x", "y", "z"], weight_decay=0.1)
    famo.logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
    losses = {t: torch.tensor(v, requires_grad=True) for t, v in {"x": 2.0, "z": 1.0}.items()}
    weights = famo.backward(losses, context())
    assert set(weights) == {"x", "z"}
    # softmax over the present tasks only: z = softmax(0.3, 0.5)
    zx = 1 / (1 + math.exp(0.2))
    c = zx / 2 + (1 - zx) / 1
    assert weights["x"].item() == pytest.approx(zx / (2 * c), abs=1e-6)
    famo.after_step(lambda: {"x": torch.tensor(1.0), "z": torch.tensor(0.9)})
    assert famo.logits[1].item() == pytest.approx(-0.2)  # weight decay did not touch it
    assert famo.exp_avg[1].item() == 0.0 and famo.adam_steps.tolist() == [1, 0, 1]


def test_a_task_the_recomputation_lacks_takes_no_part_in_the_update():
    famo = FAMO(["x", "y"])
    famo.backward({t: torch.tensor(2.0, requires_grad=True) for t in "xy"}, context())
    famo.after_step(lambda: {"x": torch.tensor(1.0)})
    assert famo.adam_steps.tolist() == [1, 0]
    assert famo.logits.tolist() == [0.0, 0.0]  # z = (1,): no gradient, and ξ = 0 has no decay


def test_after_step_without_a_pending_backward_does_nothing():
    famo = FAMO(["x"])
    famo.after_step(lambda: pytest.fail("recompute must not run"))
    assert famo.logits.tolist() == [0.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr=0.0"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"betas": (0.9, 1.0)}, "betas="),
        ({"eps": 0.0}, "eps=0.0"),
        ({"adam_eps": -1e-8}, "adam_eps="),
        ({"min_losses": [0.0]}, "min_losses=.*2 finite"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FAMO(["x", "y"], **kwargs)
