"""MGDA / MGDA-UB against the min-norm definition (Sener & Koltun 2018)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from attnmtl.weighting import MGDA, MGDAUB, create_weighting
from attnmtl.weighting.solvers import min_norm


def gram_of(g: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    G = torch.tensor(g, dtype=torch.float64)
    return G, G @ G.T


def two_task_closed_form(g1: torch.Tensor, g2: torch.Tensor) -> float:
    """The paper's Algorithm 1: γ = clip(((g2 - g1)·g2) / ‖g1 - g2‖², 0, 1) weights g1."""
    diff = g1 - g2
    return float(torch.clamp((g2 - g1) @ g2 / (diff @ diff), 0.0, 1.0))


@pytest.mark.parametrize(
    "g",
    [
        [[1.0, 0.0], [0.0, 1.0]],  # orthogonal, equal norms: the midpoint
        [[2.0, 0.0], [-1.0, 1.0]],  # conflicting
        [[1.0, 1.0], [3.0, 3.0]],  # collinear: the shorter one
        [[1.0, 0.2], [0.9, 0.1]],  # nearly equal
        [[4.0, 1.0], [0.5, 0.5]],  # the optimum is a vertex (γ clipped to 0)
    ],
)
def test_two_gradients_match_the_closed_form(g):
    G, M = gram_of(g)
    gamma = two_task_closed_form(G[0], G[1])
    w = MGDA(["a", "b"]).combine(M, torch.ones(2, dtype=torch.float64), [0, 1])
    torch.testing.assert_close(w, torch.tensor([gamma, 1 - gamma], dtype=torch.float64))


def test_the_hand_computed_example():
    # g1 = (2, 0), g2 = (-1, 1): γ = ((g2-g1)·g2)/‖g1-g2‖² = (3 + 1)/(9 + 1) = 0.4,
    # d = 0.4·(2, 0) + 0.6·(-1, 1) = (0.2, 0.6)
    G, M = gram_of([[2.0, 0.0], [-1.0, 1.0]])
    c = MGDA(["a", "b"]).combine(M, torch.ones(2, dtype=torch.float64), [0, 1])
    torch.testing.assert_close(c @ G, torch.tensor([0.2, 0.6], dtype=torch.float64))


def scipy_min_norm(M: np.ndarray) -> float:
    k = M.shape[0]
    result = minimize(
        lambda x: x @ M @ x,
        np.ones(k) / k,
        jac=lambda x: 2 * M @ x,
        bounds=[(0, 1)] * k,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return float(result.fun)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(2, 8),
    n=st.integers(1, 12),
    shared=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_min_norm_is_optimal_against_scipy_and_a_descent_direction(k, n, shared, seed):
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(1, n, generator=g, dtype=torch.float64) * shared
    G = common + torch.randn(k, n, generator=g, dtype=torch.float64)
    M = G @ G.T
    w = min_norm(M)
    assert bool((w >= 0).all())
    assert abs(float(w.sum()) - 1.0) < 1e-12
    value = float(w @ M @ w)
    scale = float(M.diagonal().max())
    assert value <= scipy_min_norm(M.numpy()) + 1e-9 * scale
    # optimality (KKT): every gradient has g_kᵀd >= ‖d‖², so d descends on every task
    d = w @ G
    assert bool((G @ d >= d @ d - 1e-9 * scale).all())


def test_zero_and_single_gradients_are_finite():
    mgda = MGDA(["a", "b", "c"])
    ones = torch.ones(3, dtype=torch.float64)
    zero = torch.zeros(3, 3, dtype=torch.float64)
    torch.testing.assert_close(mgda.combine(zero, ones, [0, 1, 2]), ones / 3)
    _, M = gram_of([[1.0, 0.0], [0.0, 0.0], [2.0, 1.0]])  # one zero gradient: d = 0 is optimal
    w = mgda.combine(M, ones, [0, 1, 2])
    assert torch.isfinite(w).all()
    assert float(w @ M @ w) < 1e-8
    single = mgda.combine(torch.tensor([[4.0]], dtype=torch.float64), ones[:1], [1])
    torch.testing.assert_close(single, torch.ones(1, dtype=torch.float64))


def test_duplicate_gradients_share_the_weight():
    G, M = gram_of([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    w = MGDA(["a", "b", "c"]).combine(M, torch.ones(3, dtype=torch.float64), [0, 1, 2])
    torch.testing.assert_close(w @ G, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_l2_normalisation_weights_the_unit_gradients():
    # unit gradients (1,0) and (0,1) have min-norm weights 1/2 each: c = (1/2)/‖g‖
    _, M = gram_of([[4.0, 0.0], [0.0, 1.0]])
    losses = torch.ones(2, dtype=torch.float64)
    c = MGDA(["a", "b"], normalization="l2").combine(M, losses, [0, 1])
    torch.testing.assert_close(c, torch.tensor([0.125, 0.5], dtype=torch.float64))
    c = MGDA(["a", "b"], normalization="loss").combine(
        M, torch.tensor([2.0, 1.0], dtype=torch.float64), [0, 1]
    )
    # gradients / losses: (2, 0) and (0, 1): w = (1/5, 4/5), c = w / loss
    torch.testing.assert_close(c, torch.tensor([0.1, 0.8], dtype=torch.float64))


def test_registry_names_and_mgda_ub_defaults_to_features():
    assert type(create_weighting("mgda", ["a", "b"])) is MGDA
    ub = create_weighting("mgda_ub", ["a", "b"])
    assert type(ub) is MGDAUB
    assert ub.mode == "features"
    assert ub.needs == "features"


def test_bad_normalization_is_one_line():
    with pytest.raises(ValueError, match=r"normalization='max'; expected one of: none, l2"):
        MGDA(["a", "b"], normalization="max")


def tiny_task_gradients(k: int, seed: int, tiny: float = 1e-6) -> torch.Tensor:
    """K random gradients (K, 50) in float64; task 0's is ``tiny`` times the others' norm."""
    g = torch.randn(k, 50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g[0] *= tiny
    return g


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_a_task_a_million_times_smaller_meets_the_optimality_conditions(k, seed):
    """d = Σ w_j g_j is the min-norm point iff g_jᵀd >= ‖d‖² for every j, with equality on
    the support of w (Wolfe 1976). Checked relative to each task's scale ‖g_j‖‖d‖ to 1e-6;
    a ridge fixed relative to the mean squared norm once left these 7e-4 off."""
    G = tiny_task_gradients(k, seed)
    w = min_norm(G @ G.T)
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
    d = w @ G
    gap = (G @ d - d @ d) / (G.norm(dim=1) * d.norm())  # (K,) relative slack
    assert float(gap.min()) >= -1e-6, gap
    assert float(gap[w > 0].abs().max()) <= 1e-6, gap


def test_a_zero_gradient_among_others_gives_the_zero_update():
    G = torch.tensor([[1.0, 2.0], [0.0, 0.0], [-3.0, 1.0]], dtype=torch.float64)
    w = min_norm(G @ G.T)
    torch.testing.assert_close(w, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
