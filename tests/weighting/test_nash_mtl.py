"""Nash-MTL (Navon et al., ICML 2022): α > 0 with GGᵀα = 1/α, clipped to ‖αᵀG‖ ≤ max_norm.

Checked against the optimality condition, closed forms (orthogonal and collinear gradients),
the scale invariance of the bargaining solution, and scipy on the convex formulation
min_{α>0} ½ αᵀMα − Σ log α (whose stationarity condition is Mα = 1/α).
"""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

import attnmtl.weighting.gradient as gradient_module
from attnmtl.weighting import StepContext
from attnmtl.weighting.gradient import TaskGradients
from attnmtl.weighting.nash_mtl import NashMTL, nash_bargaining
from attnmtl.weighting.registry import create_weighting

TASKS = ["a", "b", "c", "d", "e", "f", "g", "h"]


def gradients(k: int, n: int, seed: int, shared: float = 0.0) -> Tensor:
    """K random gradients (K, N) of scales e^0..e^3, with a common component of weight shared."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(k, n, generator=g, dtype=torch.float64)
    rows = rows + shared * torch.randn(1, n, generator=g, dtype=torch.float64)
    return rows * torch.rand(k, 1, generator=g, dtype=torch.float64).mul(3).exp()


def nash(k: int = 8, **options) -> NashMTL:
    weighting = create_weighting("nash_mtl", TASKS[:k], **options)
    assert isinstance(weighting, NashMTL)
    return weighting


def combine(weighting: NashMTL, grads: Tensor, index: list[int] | None = None) -> Tensor:
    k = grads.shape[0]
    losses = torch.ones(k, dtype=torch.float64)
    return weighting.combine(grads @ grads.T, losses, list(range(k)) if index is None else index)


@pytest.mark.parametrize("k", [2, 3, 5, 8])
@pytest.mark.parametrize("shared", [0.0, 1.0, 3.0])
def test_optimality_condition_on_random_grams(k, shared):
    for seed in range(5):
        grads = gradients(k, 4 * k + 3, seed, shared)
        gram = grads @ grads.T
        alpha = nash(k, max_norm=0.0).combine(gram, torch.ones(k).double(), list(range(k)))
        assert (alpha > 0).all()
        # Mα = 1/α, i.e. every task's directional derivative g_iᵀd is 1/α_i
        torch.testing.assert_close(
            alpha * (gram @ alpha), torch.ones(k).double(), atol=1e-8, rtol=0
        )


def test_ill_conditioned_grams_converge():
    """Square G (N = K): Grams with condition numbers up to ~1e6, where the damped phase runs."""
    for seed in range(20):
        grads = gradients(8, 8, seed)
        gram = grads @ grads.T
        alpha = nash_bargaining(gram)
        assert alpha is not None
        torch.testing.assert_close(
            alpha * (gram @ alpha), torch.ones(8).double(), atol=1e-8, rtol=0
        )


def test_orthogonal_gradients_give_inverse_norms():
    norms = torch.tensor([0.5, 2.0, 3.0, 1e-3]).double()
    grads = torch.diag(norms)
    alpha = combine(nash(4, max_norm=0.0), grads)
    torch.testing.assert_close(alpha, 1 / norms, atol=0, rtol=1e-12)


def test_collinear_gradients_of_one_direction_have_a_solution():
    # g2 = 2 g1: with β = α ⊙ ‖g‖, Cβ = 1/β for C = 11ᵀ gives β = (1/√2, 1/√2)
    g1 = torch.tensor([3.0, 4.0]).double()
    alpha = combine(nash(2, max_norm=0.0), torch.stack([g1, 2 * g1]))
    torch.testing.assert_close(alpha, torch.tensor([1 / (5 * 2**0.5), 1 / (10 * 2**0.5)]).double())


def test_solution_is_scale_equivariant_per_task():
    grads = gradients(6, 20, 3, shared=1.0)
    base = combine(nash(6, max_norm=0.0), grads)
    torch.testing.assert_close(combine(nash(6, max_norm=0.0), 7.0 * grads), base / 7.0)
    scales = torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0, 1e3]).double()
    scaled = combine(nash(6, max_norm=0.0), scales[:, None] * grads)
    torch.testing.assert_close(scaled, base / scales)
    # with the (scale-free) clipping as well: M → s²M gives c/s
    torch.testing.assert_close(combine(nash(6), 7.0 * grads), combine(nash(6), grads) / 7.0)


def test_matches_scipy_on_the_convex_formulation():
    for seed in range(3):
        grads = gradients(5, 12, seed, shared=1.0)
        m = (grads @ grads.T).numpy()

        def objective(a: np.ndarray, m: np.ndarray = m) -> tuple[float, np.ndarray]:
            return 0.5 * a @ m @ a - np.log(a).sum(), m @ a - 1 / a

        start = np.ones(5)
        result = minimize(
            objective, start, jac=True, method="L-BFGS-B", bounds=[(1e-9, None)] * 5,
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
        )  # fmt: skip
        assert result.success
        alpha = combine(nash(5, max_norm=0.0), grads)
        np.testing.assert_allclose(alpha.numpy(), result.x, rtol=1e-5)


def test_max_norm_clips_the_update_to_unit_norm():
    grads = gradients(4, 10, 0, shared=1.0)
    alpha = combine(nash(4, max_norm=0.0), grads)
    # at the solution ‖αᵀG‖² = Σ α_i (Mα)_i = K
    assert torch.linalg.vector_norm(alpha @ grads).item() == pytest.approx(2.0, rel=1e-9)
    c = combine(nash(4), grads)
    torch.testing.assert_close(c, alpha / (2.0 + 1e-6))  # clip_grad_norm_'s factor
    c = combine(nash(4, max_norm=0.5), grads)
    assert torch.linalg.vector_norm(c @ grads).item() == pytest.approx(0.5, rel=1e-6)
    c = combine(nash(4, max_norm=10.0), grads)  # below the bound: untouched
    torch.testing.assert_close(c, alpha)


def test_single_task():
    grads = torch.tensor([[3.0, 4.0]]).double()
    torch.testing.assert_close(combine(nash(1, max_norm=0.0), grads), torch.tensor([0.2]).double())
    c = combine(nash(1), grads)  # ‖d‖ = 1 already
    torch.testing.assert_close(c, torch.tensor([0.2 / (1 + 1e-6)]).double())


@pytest.mark.parametrize(
    "rows",
    [
        [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 3.0]],  # a zero gradient
        [[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0], [0.0, 1.0, 3.0]],  # g1 + g2 = 0
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, -1.0, 0.0]],  # g1 + g2 + g3 = 0
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # all zero
    ],
)
def test_no_solution_reuses_the_previous_coefficients(rows, monkeypatch):
    """Some v ≥ 0, v ≠ 0 has Gᵀv = 0: ½αᵀMα − Σ log α is unbounded below, no Nash solution."""
    monkeypatch.setattr(gradient_module, "_warned_fallback", set())
    grads = torch.tensor(rows).double()
    assert nash_bargaining(grads @ grads.T) is None
    weighting = nash(5, max_norm=0.0)
    weighting.coefficients.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))
    with pytest.warns(RuntimeWarning, match="no Nash bargaining solution"):
        c = combine(weighting, grads, index=[4, 0, 2])
    torch.testing.assert_close(c, torch.tensor([0.5, 0.1, 0.3]).double(), rtol=1e-6, atol=0)
    assert weighting.fallbacks == 1
    c = combine(nash(5), grads, index=[4, 0, 2])  # previous coefficients (ones), clipped
    assert torch.isfinite(c).all()
    assert torch.linalg.vector_norm(c @ grads).item() <= 1.0


def stationary(k: int, delta: float, dtype: torch.dtype) -> Tensor:
    """Jacobian (K, 1000) whose rows sum to K·δ·mean(V): δ = 0 is Pareto-stationary."""
    rows = torch.randn(k, 1000, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    return (rows - (1 - delta) * rows.mean(0)).to(dtype)


@pytest.mark.parametrize("k", [2, 3, 8])
@pytest.mark.parametrize("delta", [0.0, 1e-10])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stationary_and_near_stationary_jacobians_fall_back_with_a_warning(
    k, delta, dtype, monkeypatch
):
    """No α solves Mα = 1/α there (δ = 0), or none that float arithmetic can find (δ = 1e-10);
    the solver once returned a mostly negative α (residual up to 8.7e282) and the update had
    norm 1.8e133. Now it says "no solution" and the previous coefficients are used, counted."""
    monkeypatch.setattr(gradient_module, "_warned_fallback", set())
    grads = stationary(k, delta, dtype)
    gram = TaskGradients([grads], [], None, [], []).gram()  # as GradientWeighting.backward
    alpha = nash_bargaining(gram)
    if alpha is not None:  # only ever an answer that passes the check (see the docstring)
        assert (alpha > 0).all()
        assert (alpha * (gram @ alpha) - 1).abs().max() <= 1e-6
    weighting = nash(k)
    previous = torch.linspace(0.5, 1.5, k)
    weighting.coefficients.copy_(previous)
    with pytest.warns(RuntimeWarning, match="no Nash bargaining solution"):
        c = weighting.combine(gram, torch.ones(k).double(), list(range(k)))
    assert weighting.fallbacks == 1
    assert torch.isfinite(c).all() and (c > 0).all()
    norm = torch.sqrt(c @ gram @ c)  # the previous coefficients, clipped to max_norm 1
    assert norm <= 1.0 + 1e-9
    torch.testing.assert_close(c / c.sum(), previous.double() / previous.sum())


def test_a_tiny_gradient_is_solved_not_dropped():
    """A gradient 1e-8 times the others still has a solution: α_i ≈ 1e8 / ‖g_1‖."""
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1e-8, 1e-8]]).double()
    alpha = combine(nash(3, max_norm=0.0), grads)
    gram = grads @ grads.T
    torch.testing.assert_close(alpha * (gram @ alpha), torch.ones(3).double(), atol=1e-8, rtol=0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_norm": -1.0}, r"^max_norm=-1.0; expected a finite number >= 0$"),
        ({"max_norm": math.inf}, r"^max_norm=inf"),
        ({"optim_niter": 0}, r"^optim_niter=0; expected an integer >= 1$"),
        ({"optim_niter": True}, r"^optim_niter=True"),
        ({"update_every": 0}, r"^update_every=0"),
        ({"mode": "last"}, r"^mode='last'"),
    ],
)
def test_options_are_validated(options, match):
    with pytest.raises(ValueError, match=match):
        nash(3, **options)


def test_backward_scales_shared_and_task_gradients_by_alpha():
    """Through the base class: the shared update is cᵀG and each head gets c_k × its gradient."""
    shared = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    heads = {t: nn.Parameter(torch.tensor(float(i + 1))) for i, t in enumerate("abc")}
    targets = {"a": torch.tensor([1.0, 0.0, 0.0]), "b": torch.tensor([0.0, 2.0, 1.0])}
    targets["c"] = torch.tensor([3.0, 1.0, -1.0])
    weighting = nash(3)
    losses = {t: heads[t] * (shared * targets[t]).sum() ** 2 for t in "abc"}
    ctx = StepContext([shared], None, 0, 0, task_parameters={t: [heads[t]] for t in "abc"})
    reported = weighting.backward(losses, ctx)
    rows = []
    for t in "abc":
        (grad,) = torch.autograd.grad(
            heads[t].detach() * (shared * targets[t]).sum() ** 2, [shared]
        )
        rows.append(grad.double())
    grads = torch.stack(rows)
    c = nash(3).combine(grads @ grads.T, torch.ones(3).double(), [0, 1, 2])
    torch.testing.assert_close(
        torch.stack([reported[t] for t in "abc"]).double(), c, rtol=1e-6, atol=0
    )
    torch.testing.assert_close(shared.grad.double(), c @ grads, rtol=1e-5, atol=1e-7)
    for k, t in enumerate("abc"):
        raw = ((shared * targets[t]).sum() ** 2).detach().double()
        torch.testing.assert_close(heads[t].grad.double(), c[k] * raw, rtol=1e-5, atol=1e-7)
    assert torch.linalg.vector_norm(shared.grad).item() == pytest.approx(1.0, rel=1e-5)
