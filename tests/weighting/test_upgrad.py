"""UPGrad (Quinton & Rey, 2024): d = Σ_i w_i π(g_i), π the projection onto the dual cone
{x : ⟨g_j, x⟩ >= 0 for all j}, w_i = 1/K by default.

The tests check the definition: no task conflicts with d, each projection satisfies the KKT
conditions of the projection (and matches scipy's NNLS), non-conflicting gradients give the mean,
and a case by hand.
"""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import nnls
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext
from attnmtl.weighting.registry import create_weighting
from attnmtl.weighting.upgrad import RIDGE, UPGrad, _path, cone_projection

TASKS = [f"t{i}" for i in range(8)]


def coefficients(G: Tensor, weights: list[float] | None = None) -> Tensor:
    k = G.shape[0]
    weighting = create_weighting("upgrad", TASKS[:k], weights=weights)
    assert isinstance(weighting, UPGrad)
    c = weighting.combine(G @ G.T, torch.zeros(k, dtype=G.dtype), list(range(k)))
    assert c.shape == (k,) and bool(torch.isfinite(c).all())
    return c


def projection(G: Tensor, i: int) -> Tensor:
    """Coefficients v with π(g_i) = vᵀG: UPGrad with all the weight on task i."""
    weights = [0.0] * G.shape[0]
    weights[i] = 1.0
    return coefficients(G, weights)


def assert_no_conflict(G: Tensor, d: Tensor, tol: float = 1e-9) -> None:
    # ‖d‖ <= max_i ‖g_i‖ (a projection is no longer than what it projects; weights sum to 1)
    norms = G.norm(dim=1)
    bound = -tol * norms * norms.max()
    assert bool((G @ d >= bound).all()), (G @ d, bound)


def random_gradients(k: int, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(1, n, dtype=torch.float64, generator=g)
    noise = torch.randn(k, n, dtype=torch.float64, generator=g)
    norms = torch.rand(k, 1, dtype=torch.float64, generator=g).mul(4).exp()
    return (common * (seed % 3) / 2 + noise) * norms


def adversarial_gradients(seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    kind = seed % 4
    if kind == 0:  # nearly opposite pairs
        base = torch.randn(4, 6, dtype=torch.float64, generator=g)
        tilt = 1e-4 * torch.randn(4, 6, dtype=torch.float64, generator=g)
        return torch.cat([base, -base + tilt])
    if kind == 1:  # norms over twelve orders of magnitude
        G = torch.randn(8, 10, dtype=torch.float64, generator=g)
        return G * torch.logspace(-6, 6, 8, dtype=torch.float64)[:, None]
    if kind == 2:  # more tasks than dimensions
        return torch.randn(8, 2, dtype=torch.float64, generator=g)
    # every pair conflicts: a regular simplex's vertices around the origin, plus noise
    G = torch.eye(8, dtype=torch.float64) - 1 / 8
    return G + 1e-3 * torch.randn(8, 8, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("seed", range(8))
def test_no_task_conflicts_with_the_update(seed):
    for G in (
        random_gradients([2, 3, 5, 8][seed % 4], [3, 8, 40][seed % 3], seed),
        adversarial_gradients(seed),
    ):
        assert_no_conflict(G, coefficients(G) @ G)


@pytest.mark.parametrize("seed", range(8))
def test_each_projection_is_the_projection_onto_the_dual_cone(seed):
    G = random_gradients([3, 5, 8, 8][seed % 4], [4, 8, 20, 5][seed % 4], seed)
    k = G.shape[0]
    scale = G.norm(dim=1).max().item()
    for i in range(k):
        v = projection(G, i)
        p = v @ G
        # KKT of min ‖p - g_i‖² s.t. G p >= 0: feasible, p - g_i = Gᵀλ with λ = v - e_i >= 0,
        # and λ_j ⟨g_j, p⟩ = 0
        lam = v - torch.eye(k, dtype=torch.float64)[i]
        assert lam.min().item() >= -1e-12 * lam.abs().max().item()
        slack = G @ p
        norms = G.norm(dim=1)
        assert bool((slack >= -1e-9 * norms * scale).all())
        assert (lam * slack).abs().max().item() <= 1e-9 * scale**2
        # and an independent solver: min_{λ>=0} ‖g_i + Gᵀλ‖ by scipy's NNLS
        ref, _ = nnls(G.numpy().T, -G[i].numpy(), maxiter=1000)
        expected = G[i].numpy() + G.numpy().T @ ref
        np.testing.assert_allclose(p.numpy(), expected, rtol=0, atol=1e-9 * scale)


def test_by_hand():
    # g1 = (1, 0), g2 = (-1, 1): the dual cone is {0 <= x1 <= x2}, spanned by (0, 1), (1, 1).
    # π(g1) = (1/2, 1/2) = g1 + ½ g2, π(g2) = (0, 1) = g1 + g2: c = mean of (1, ½), (1, 1)
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(coefficients(G), torch.tensor([1.0, 0.75], dtype=torch.float64))
    torch.testing.assert_close(projection(G, 0), torch.tensor([1.0, 0.5], dtype=torch.float64))


def test_no_conflict_gives_the_mean():
    G = random_gradients(5, 6, seed=0).abs()  # non-negative entries: every ⟨g_i, g_j⟩ >= 0
    torch.testing.assert_close(coefficients(G), torch.full((5,), 0.2, dtype=torch.float64))
    # orthogonal gradients do not conflict either
    torch.testing.assert_close(
        coefficients(torch.eye(3, dtype=torch.float64)), torch.full((3,), 1 / 3).double()
    )


def test_one_task():
    g = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    assert UPGrad(["a"]).combine(g @ g.T, torch.zeros(1), [0]).item() == 1.0


def test_zero_and_collinear_gradients():
    g = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    # the dual cone of {g, -2g, 3g, 0} is g's orthogonal complement: every projection is 0
    G = torch.stack([g, -2 * g, 3 * g, zero])
    d = coefficients(G) @ G
    assert d.norm().item() <= 1e-9 * g.norm().item()
    # a zero gradient constrains nothing and a duplicate adds no constraint: the cone is that of
    # {g, h}, and d = (2 π(g) + π(h) + π(0)) / 4 with π(0) = 0
    h = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)  # ⟨g, h⟩ = -2: they conflict
    G = torch.stack([g, g, h, zero])
    d = coefficients(G) @ G
    assert_no_conflict(G, d)
    pair = torch.stack([g, h])
    expected = (2 * projection(pair, 0) @ pair + projection(pair, 1) @ pair) / 4
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        coefficients(torch.stack([zero, zero])), torch.full((2,), 0.5).double()
    )


def test_weights_combine_the_projections_as_given():
    G = random_gradients(3, 4, seed=1)
    weights = [0.5, 2.0, 1.0]
    c = coefficients(G, weights)
    expected = sum(w * projection(G, i) for i, w in enumerate(weights))
    torch.testing.assert_close(c, expected)
    # on a step with tasks 0 and 2 only, their own weights, not renormalised
    weighting = UPGrad(["a", "b", "c"], weights=weights)
    sub = G[[0, 2]]
    c = weighting.combine(sub @ sub.T, torch.zeros(2), [0, 2])
    uniform = coefficients(sub)  # ½ π(g_0) + ½ π(g_2)
    torch.testing.assert_close(c, 0.5 * projection(sub, 0) + 1.0 * projection(sub, 1))
    assert not torch.allclose(c, uniform)


def test_solver_fallback_and_guesses_agree():
    G = random_gradients(8, 10, seed=3)
    norms = G.norm(dim=1)
    unit = (G @ G.T) / norms[:, None] / norms[None, :]
    unit.diagonal().fill_(1 + RIDGE)
    answers = [
        cone_projection(unit, guess)
        for guess in (
            unit < 0,
            torch.zeros(8, 8, dtype=torch.bool),
            torch.ones(8, 8, dtype=torch.bool),
        )
    ]
    answers.append(_path(unit, unit, 0.0, None))
    eye = torch.eye(8, dtype=torch.float64)
    for lam in answers[1:]:
        torch.testing.assert_close(
            (eye + lam) @ unit, (eye + answers[0]) @ unit, rtol=0, atol=1e-10
        )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, 2.0], "weights=\\[1.0, 2.0\\]"),
        ([1.0, -1.0, 1.0], "weights=\\[1.0, -1.0, 1.0\\]"),
        ([0.0, 0.0, 0.0], "weights=\\[0.0, 0.0, 0.0\\]"),
        ([1.0, math.inf, 1.0], "weights=\\[1.0, inf, 1.0\\]"),
    ],
)
def test_option_validation(weights, message):
    with pytest.raises(ValueError, match=message):
        UPGrad(["a", "b", "c"], weights=weights)


def test_backward_writes_the_update_and_leaves_absent_tasks_alone():
    theta = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    A = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 1.0, 0.0]], dtype=torch.float64)
    weighting = UPGrad(["a", "b", "c"]).double()
    ctx = StepContext([theta], None, 0, 0, task_parameters={t: [] for t in "abc"})
    weights = weighting.backward({"a": A[0] @ theta, "c": A[2] @ theta}, ctx)
    # tasks a and c are the case by hand: c = (1, 3/4)
    torch.testing.assert_close(
        torch.stack([weights["a"], weights["c"]]), torch.tensor([1.0, 0.75]).double()
    )
    torch.testing.assert_close(theta.grad, torch.tensor([0.25, 0.75, 0.0], dtype=torch.float64))
    assert weighting.coefficients[1].item() == 1.0  # task b was absent: untouched
