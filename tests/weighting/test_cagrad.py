"""CAGrad (Liu et al., NeurIPS 2021): d = argmax_{‖d - g0‖ <= c‖g0‖} min_i ⟨g_i, d⟩.

The coefficients returned are K (1/K + λ) / s with d = g0 + Gᵀλ and s = 1, 1 + c², 1 + c
(rescale 0, 1, 2), as the official code's update times K. The tests check the update against
the definition: by hand, by a zero duality gap with the paper's dual
min_{w ∈ simplex} ⟨g_w, g0⟩ + c‖g0‖‖g_w‖, and against scipy's SLSQP on the primal.
"""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext
from attnmtl.weighting.cagrad import CAGrad
from attnmtl.weighting.registry import create_weighting
from attnmtl.weighting.upgrad import RIDGE, _path, ball_projection

TASKS = [f"t{i}" for i in range(8)]


def update(G: Tensor, c: float = 0.4, rescale: int = 0) -> Tensor:
    """The un-multiplied update d (rescaled) of CAGrad for the rows of G."""
    k = G.shape[0]
    weighting = create_weighting("cagrad", TASKS[:k], c=c, rescale=rescale)
    assert isinstance(weighting, CAGrad)
    coefficients = weighting.combine(G @ G.T, torch.zeros(k, dtype=G.dtype), list(range(k)))
    assert coefficients.shape == (k,) and bool(torch.isfinite(coefficients).all())
    return coefficients @ G / k


def primal_by_scipy(G: np.ndarray, c: float) -> float:
    """max t s.t. G d >= t, ‖d - g0‖² <= (c‖g0‖)², by SLSQP over (d, t)."""
    g0 = G.mean(0)
    r2 = (c * np.linalg.norm(g0)) ** 2
    constraints = [
        {"type": "ineq", "fun": lambda z: G @ z[:-1] - z[-1]},
        {"type": "ineq", "fun": lambda z: r2 - np.sum((z[:-1] - g0) ** 2)},
    ]
    start = np.r_[g0, (G @ g0).min()]
    res = minimize(
        lambda z: -z[-1],
        start,
        jac=lambda z: np.r_[np.zeros(len(z) - 1), -1.0],
        constraints=constraints,
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return float(res.x[-1])


def random_gradients(k: int, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(1, n, dtype=torch.float64, generator=g)
    noise = torch.randn(k, n, dtype=torch.float64, generator=g)
    norms = torch.rand(k, 1, dtype=torch.float64, generator=g).mul(3).exp()
    return (common * (seed % 3) / 2 + noise) * norms  # some aligned, some conflicting


@pytest.mark.parametrize("seed", range(12))
def test_maximises_the_worst_improvement_within_the_ball(seed):
    k, n = [(2, 5), (3, 4), (5, 8), (8, 10)][seed % 4]
    c = [0.4, 0.2, 0.8, 1.5][seed % 4]
    G = random_gradients(k, n, seed)
    d = update(G, c=c)
    g0 = G.mean(0)
    radius = c * g0.norm().item()
    # the constraint of the CAGrad problem, and it binds
    assert (d - g0).norm().item() == pytest.approx(radius, rel=1e-9)
    worst = (G @ d).min().item()
    scale = radius * G.norm(dim=1).max().item()
    # the paper's dual min_w ⟨g_w, g0⟩ + c‖g0‖‖g_w‖ bounds every feasible worst improvement from
    # above; at w = λ / Σλ (d - g0 = Gᵀλ) it equals ours: a zero duality gap, so d is optimal
    lam = torch.linalg.lstsq(G.T, (d - g0)[:, None]).solution[:, 0]
    assert lam.min().item() >= -1e-8 * lam.abs().max().item()
    gw = lam / lam.sum() @ G
    dual = (gw @ g0 + radius * gw.norm()).item()
    assert worst == pytest.approx(dual, abs=1e-9 * scale)
    # an independent solver of the primal agrees
    assert worst == pytest.approx(primal_by_scipy(G.numpy(), c), abs=1e-6 * scale)


def test_one_tight_task_by_hand():
    # g1 = (2, 0), g2 = (0, 1): g0 = (1, 1/2), r = 0.4 √1.25. Task 2 is the worst; moving d
    # from g0 by r along g2 leaves ⟨g1, d⟩ = 2 above ⟨g2, d⟩ = 1/2 + r: only task 2 is tight.
    G = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    r = 0.4 * math.sqrt(1.25)
    weighting = CAGrad(["a", "b"])  # c = 0.4, rescale = 1: divided by 1.16
    c = weighting.combine(G @ G.T, torch.zeros(2, dtype=torch.float64), [0, 1])
    # d = g0 + r e2 = ½ g1 + (½ + r) g2; coefficients 2 d / 1.16
    expected = torch.tensor([1.0, 1.0 + 2 * r], dtype=torch.float64) / 1.16
    torch.testing.assert_close(c, expected, rtol=1e-10, atol=0)


def test_symmetric_tasks_by_hand():
    # orthogonal unit gradients: by symmetry d = g0 + c‖g0‖ g0/‖g0‖ = (1 + c) g0
    G = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(update(G, c=0.5), 1.5 * G.mean(0), rtol=1e-10, atol=0)


def test_opposite_collinear_gradients_by_hand():
    # g1 = (1, 0), g2 = (-2, 0): g0 = (-1/2, 0), r = 0.2. Along the axis, min(d1, -2 d1) is
    # largest at the ball's edge d1 = -0.3: d = g0 + 0.2 g1, coefficients 2 (1/2 + 0.2, 1/2)
    G = torch.tensor([[1.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    weighting = CAGrad(["a", "b"], rescale=0)
    c = weighting.combine(G @ G.T, torch.zeros(2, dtype=torch.float64), [0, 1])
    torch.testing.assert_close(c, torch.tensor([1.4, 1.0], dtype=torch.float64), rtol=1e-9, atol=0)


def test_c_zero_is_gradient_descent_on_the_sum():
    G = random_gradients(5, 7, seed=1)
    for rescale in (0, 1, 2):
        weighting = CAGrad(TASKS[:5], c=0.0, rescale=rescale)
        c = weighting.combine(G @ G.T, torch.zeros(5, dtype=torch.float64), list(range(5)))
        torch.testing.assert_close(c, torch.ones(5, dtype=torch.float64))


def test_rescale_divides_by_one_one_plus_c_squared_or_one_plus_c():
    G = random_gradients(4, 6, seed=2)
    d0, d1, d2 = (update(G, c=0.6, rescale=r) for r in (0, 1, 2))
    torch.testing.assert_close(d1 * 1.36, d0)
    torch.testing.assert_close(d2 * 1.6, d0)


def test_one_task():
    g = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    # d = g + c‖g‖ g/‖g‖ = (1 + c) g
    assert CAGrad(["a"]).combine(g @ g.T, torch.zeros(1), [0]).item() == pytest.approx(1.4 / 1.16)
    assert CAGrad(["a"], rescale=2).combine(g @ g.T, torch.zeros(1), [0]).item() == (
        pytest.approx(1.0)
    )


def test_zero_and_collinear_gradients_stay_finite():
    g = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    # every gradient zero, and gradients that cancel (g0 = 0): the ball is a point, d = g0
    for G in (torch.stack([zero, zero]), torch.stack([g, -g])):
        torch.testing.assert_close(update(G), G.mean(0))
    # a zero gradient cannot improve: t* = 0, and g0 already improves the others: d = g0
    G = torch.stack([g, zero, 2 * g])
    torch.testing.assert_close(update(G), G.mean(0))
    # duplicated and scaled copies: finite, inside the ball, and the worst task improves most
    G = torch.stack([g, g, 2 * g, -0.5 * g, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)])
    d = update(G)
    g0 = G.mean(0)
    assert (d - g0).norm().item() <= 0.4 * g0.norm().item() * (1 + 1e-9)
    assert (G @ d).min().item() == pytest.approx(primal_by_scipy(G.numpy(), 0.4), abs=1e-6)


def test_solver_fallback_and_guesses_agree():
    # the active-set answer does not depend on the first guess, and the parametric path (the
    # fallback should the active-set iteration cycle) gives the same projection
    G = random_gradients(8, 10, seed=5)
    gram = G @ G.T
    gram = gram / gram.diagonal().mean()
    gram.diagonal().add_(RIDGE)
    u = torch.full((8,), 1 / 8, dtype=torch.float64)
    radius2 = 0.16 * (u @ gram @ u).item()
    answers = [
        ball_projection(gram, gram @ u, guess, math.inf, radius2)
        for guess in (torch.zeros(8, dtype=torch.bool), torch.ones(8, dtype=torch.bool))
    ]
    answers.append(
        _path(gram, (gram @ u)[None], math.inf, torch.tensor([radius2], dtype=gram.dtype))[0]
    )
    for lam in answers[1:]:
        torch.testing.assert_close(lam @ gram, answers[0] @ gram, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"c": -0.1}, "c=-0.1"),
        ({"c": math.nan}, "c=nan"),
        ({"c": True}, "c=True"),
        ({"rescale": 3}, "rescale=3"),
        ({"rescale": True}, "rescale=True"),
        ({"rescale": 1.0}, "rescale=1.0"),
    ],
)
def test_option_validation(options, message):
    with pytest.raises(ValueError, match=message):
        CAGrad(["a", "b"], **options)


def test_backward_writes_the_update_and_leaves_absent_tasks_alone():
    theta = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    A = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.5, 0.0]], dtype=torch.float64)
    weighting = CAGrad(["a", "b", "c"]).double()
    ctx = StepContext([theta], None, 0, 0, task_parameters={t: [] for t in "abc"})
    weights = weighting.backward({"a": A[0] @ theta, "c": A[2] @ theta}, ctx)
    G = A[[0, 2]]
    expected = CAGrad(["a", "c"]).combine(G @ G.T, torch.zeros(2), [0, 1])
    torch.testing.assert_close(torch.stack([weights["a"], weights["c"]]), expected)
    torch.testing.assert_close(theta.grad, expected @ G)
    assert weighting.coefficients[1].item() == 1.0  # task b was absent: untouched


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [0.4, 0.9])
def test_a_task_a_million_times_smaller_meets_the_optimality_conditions(k, seed, c):
    """The paper's d maximises min_i ⟨g_i, d⟩ over the ball ‖d − g0‖ <= c‖g0‖: the ball is
    tight, d − g0 = Gᵀλ with λ >= 0, and every task with λ_i > 0 sits at the minimum level.
    Checked to 1e-6 relative (the ball to c‖g0‖, each level to ‖g_i‖‖d‖) with task 0's
    gradient 1e-6 times the others'; a ridge fixed relative to the mean norm once put d 20-60%
    off (cosine 0.92-0.98 with the exact primal)."""
    G = torch.randn(k, 50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    G[0] *= 1e-6
    weighting = create_weighting("cagrad", TASKS[:k], c=c, rescale=0)
    coefficients = weighting.combine(G @ G.T, torch.ones(k, dtype=G.dtype), list(range(k)))
    lam = coefficients / k - 1 / k  # coefficients = K (1/K + λ)
    assert float(lam.min()) >= 0
    d = coefficients @ G / k
    g0 = G.mean(0)
    assert abs(float((d - g0).norm() / (c * g0.norm())) - 1) <= 1e-6
    levels = G @ d
    slack = (levels - levels.min()) / (G.norm(dim=1) * d.norm())  # (K,)
    tight = lam > 1e-12 * float(lam.max())
    assert bool(tight.any()) and float(slack[tight].max()) <= 1e-6, (slack, lam)
