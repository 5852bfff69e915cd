"""FORUM: its quadratic program against cvxpy (the solver of the authors' code) and the closed
form of one objective, one step against the paper's update computed by hand with autograd, and
a run through the Trainer."""

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext
from attnmtl.weighting.forum import forum_weights

TASKS = ["a", "b"]


def reference_program(gram: np.ndarray, rho: float) -> tuple[np.ndarray, float]:
    """The authors' problem (14), as their code states it, in cvxpy."""
    j = gram.shape[0] - 1
    qq = gram[j, j] + 1e-8
    pi = rho - gram[:j, j] / qq
    w = cp.Variable(j + 1, nonneg=True)
    objective = cp.quad_form(w, cp.psd_wrap(gram)) - w[j] * rho * qq
    constraints = [cp.sum(w[:j]) == 1, w[j] >= pi @ w[:j]]
    cp.Problem(cp.Minimize(objective), constraints).solve(solver=cp.CLARABEL)
    return np.asarray(w.value[:j]), float(w.value[j])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("j", [2, 3, 5])
def test_the_program_matches_cvxpy(seed, j):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(j, 7, dtype=torch.float64, generator=g)
    a = a / a.norm(dim=1, keepdim=True)
    q = torch.randn(7, dtype=torch.float64, generator=g) * (0.2 + 3 * seed / 5)
    rows = torch.cat([a, q[None]])
    gram = rows @ rows.T
    lam, nu, pi = forum_weights(gram, 0.1)
    ref_lam, ref_nu = reference_program(gram.numpy(), 0.1)
    # the direction is unique (the objective is strictly convex in it); compare it and ν
    d = lam @ a + nu * q
    ref_d = torch.from_numpy(ref_lam) @ a + ref_nu * q
    torch.testing.assert_close(d, ref_d, atol=1e-5, rtol=1e-5)
    assert nu == pytest.approx(ref_nu, abs=1e-5)
    # at the optimum the coupling is tight or ν is zero: ν = max(Σ λ_j π_j, 0)
    assert nu == pytest.approx(max(float(lam @ pi), 0.0), abs=1e-6)
    assert float(lam.sum()) == pytest.approx(1.0) and bool((lam >= 0).all())


def test_one_objective_has_the_closed_form():
    """J = 1: λ = 1 and ν = max(π, 0), π = ρ − ⟨a, q⟩/‖q‖² (the unconstrained ν* = π − ρ/2)."""
    a, q = (
        torch.tensor([1.0, 0.0], dtype=torch.float64),
        torch.tensor([0.6, 0.8], dtype=torch.float64),
    )
    for sign in (1.0, -1.0):
        rows = torch.stack([a, sign * q])
        lam, nu, pi = forum_weights(rows @ rows.T, 0.1)
        expected_pi = 0.1 - sign * 0.6 / (1.0 + 1e-8)
        assert float(pi[0]) == pytest.approx(expected_pi)
        assert lam.tolist() == pytest.approx([1.0])
        assert nu == pytest.approx(max(expected_pi, 0.0), abs=1e-7)


class Quadratic(nn.Module):
    """L_k(θ) = ½‖A_k θ − y_k‖² / n on the batch; the held-out batch has its own A, y."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.theta = nn.Parameter(torch.randn(4, dtype=torch.float64, generator=g))
        self.A = torch.randn(2, 6, 4, dtype=torch.float64, generator=g)
        self.y = torch.randn(2, 6, dtype=torch.float64, generator=g)
        self.A_val = torch.randn(2, 6, 4, dtype=torch.float64, generator=g)
        self.y_val = torch.randn(2, 6, dtype=torch.float64, generator=g)

    def losses(self, val: bool = False, theta: torch.Tensor | None = None) -> dict:
        A, y = (self.A_val, self.y_val) if val else (self.A, self.y)
        r = A @ (self.theta if theta is None else theta) - y
        return {t: 0.5 * r[k].square().mean() for k, t in enumerate(TASKS)}

    def context(self, epoch: int = 0) -> StepContext:
        ctx = StepContext([self.theta], None, 0, epoch, task_parameters={t: [] for t in TASKS})

        def rerun():
            with torch.no_grad():
                return self.losses()

        ctx.rerun, ctx.heldout = rerun, lambda: self.losses(val=True)
        ctx.part_forward = lambda n: [self.losses()]
        return ctx


def test_one_step_is_the_papers_update():
    model = Quadratic()
    forum = create_weighting("forum", TASKS, inner_steps=3, inner_lr=0.2, meta_lr=0.01)
    theta = model.theta.detach().clone()
    forum.backward(model.losses(), model.context())
    # by hand: s = softmax(0) = ½; ω^T after 3 SGD steps on f = Σ s_k L_k
    s = torch.tensor([0.5, 0.5], dtype=torch.float64)
    x = theta.clone().requires_grad_(True)
    g_f = torch.autograd.grad(
        sum(w * v for w, v in zip(s, model.losses(theta=x).values(), strict=True)), x
    )[0]
    w = theta.clone()
    for _ in range(3):
        w = w.requires_grad_(True)
        f = sum(c * v for c, v in zip(s, model.losses(theta=w).values(), strict=True))
        w = (w - 0.2 * torch.autograd.grad(f, w)[0]).detach()
    low = torch.stack(list(model.losses(theta=theta).values())).detach()
    high = torch.stack(list(model.losses(theta=w).values())).detach()
    q_alpha = s * (low - s @ low) - s * (high - s @ high)
    a = []
    for v in model.losses(val=True, theta=x).values():
        g = torch.autograd.grad(v, x, retain_graph=True)[0]
        a.append(g / (g.norm() + 1e-8))
    a = torch.stack(a)
    rows = torch.cat(
        [torch.cat([torch.zeros(2, 2, dtype=torch.float64), a], 1), torch.cat([q_alpha, g_f])[None]]
    )  # (α, ω) coordinates, as the paper's
    ref_lam, _ = reference_program((rows @ rows.T).numpy(), 0.1)
    pi = 0.1 - (rows[:2] @ rows[2]) / (rows[2] @ rows[2] + 1e-8)
    nu_bar = max(float(torch.from_numpy(ref_lam) @ pi), 0.0)  # epoch 0: λ̄ = λ
    expected = torch.from_numpy(ref_lam) @ a + nu_bar * g_f
    torch.testing.assert_close(model.theta.grad, expected, atol=1e-6, rtol=1e-6)
    assert forum.lambdas.tolist() == pytest.approx(ref_lam.tolist(), abs=1e-6)
    # the parameters are exactly as before the refit; α took one Adam step on ν̄ ∇_α q
    assert torch.equal(model.theta.detach(), theta)
    step = -0.01 * torch.sign(nu_bar * q_alpha)
    torch.testing.assert_close(forum.logits, step, atol=1e-8, rtol=1e-5)


def test_later_epochs_average_lambda():
    model = Quadratic()
    forum = create_weighting("forum", TASKS)
    forum.lambdas.fill_(0.5)
    forum.backward(model.losses(), model.context(epoch=15))  # rate 1/16^{3/4} = 1/8
    fresh = create_weighting("forum", TASKS)
    fresh.backward(Quadratic().losses(), Quadratic().context())
    expected = 0.5 + (fresh.lambdas - 0.5) / 8
    torch.testing.assert_close(forum.lambdas, expected)


def test_without_its_context_it_says_what_it_needs():
    model = Quadratic()
    ctx = model.context()
    ctx.part_forward = None
    with pytest.raises(ValueError, match=r"needs StepContext\.heldout, part_forward and rerun"):
        create_weighting("forum", TASKS).backward(model.losses(), ctx)
    with pytest.raises(ValueError, match=r"inner_steps=0; expected an integer >= 1"):
        create_weighting("forum", TASKS, inner_steps=0)
