"""The methods whose update needs the gradient rows (MoCo, DB-MTL, GradDrop, ExcessMTL),
checked step by step against their papers' updates written out here, and against torchjd
where it has the method (an independent implementation, used as an oracle only)."""

import pytest
import torch
from torch import Tensor, nn
from torchjd.aggregation import ExcessMTLWeighting
from torchjd.aggregation import GradDrop as TorchjdGradDrop

from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext
from attnmtl.weighting.gradient import RowWeighting
from attnmtl.weighting.solvers import simplex_projection

TASKS = ["a", "b", "c"]


class Linear(nn.Module):
    """Losses ``L_k = a_kᵀθ + 10`` at θ = 0: ``∇L_k = a_k`` exactly, and ``L_k = 10``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def losses(self, A: Tensor, tasks=TASKS) -> dict[str, Tensor]:
        values = A @ self.theta + 10.0
        return {t: values[k] for k, t in enumerate(tasks)}


def step(weighting, model: Linear, A: Tensor, tasks=TASKS, k: int = 0) -> Tensor:
    """The shared update the strategy writes for per-task gradients A (K, N)."""
    model.theta.grad = None
    ctx = StepContext([model.theta], None, k, 0, task_parameters={t: [] for t in tasks})
    weighting.backward(model.losses(A, tasks), ctx)
    return model.theta.grad.clone()


def draws(n_steps: int, k: int = 3, n: int = 5, seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(k, n, dtype=torch.float64, generator=g) for _ in range(n_steps)]


def test_moco_follows_its_algorithm_step_by_step():
    beta, bs, gamma, gs, rho = 0.5, 0.5, 0.1, 0.5, 0.05
    moco = create_weighting(
        "moco", TASKS, beta=beta, beta_sigma=bs, gamma=gamma, gamma_sigma=gs, rho=rho
    )
    model = Linear(5)
    y, lam = torch.zeros(3, 5, dtype=torch.float64), torch.full((3,), 1 / 3).double()
    for t, A in enumerate(draws(4), start=1):
        y = y - beta / t**bs * (y - A)
        lam = simplex_projection(lam - gamma / t**gs * ((y @ y.T + rho * torch.eye(3)) @ lam))
        torch.testing.assert_close(step(moco, model, A), y.T @ lam)
    torch.testing.assert_close(moco.lambdas, lam)


def test_moco_normalize_rescales_each_gradient_to_its_loss():
    moco = create_weighting("moco", TASKS, normalize=True, beta=1.0, beta_sigma=0.0)
    A = draws(1)[0]
    step(moco, Linear(5), A)
    # β = 1: y is this step's normalised gradient, L_k g_k/‖g_k‖ with L_k = 10
    torch.testing.assert_close(moco.tracked, 10 * A / (A.norm(dim=1, keepdim=True) + 1e-8))


def test_moco_absent_task_keeps_its_tracked_gradient_and_weight_share():
    moco = create_weighting("moco", TASKS)
    model = Linear(5)
    step(moco, model, draws(1)[0])
    kept, share = moco.tracked[2].clone(), moco.lambdas[2].clone()
    step(moco, model, draws(1, k=2, seed=3)[0], tasks=["a", "b"])
    assert torch.equal(moco.tracked[2], kept) and moco.lambdas[2] == share
    torch.testing.assert_close(moco.lambdas.sum(), torch.tensor(1.0).double())


def test_db_mtl_averages_log_loss_gradients_and_equalises_their_norms():
    db = create_weighting("db_mtl", TASKS, beta=0.9, beta_sigma=0.5)
    model = Linear(5)
    avg = torch.zeros(3, 5, dtype=torch.float64)
    for t, A in enumerate(draws(3, seed=1), start=1):
        update = step(db, model, A)
        grads = A / 10.0  # ∇ log L_k = a_k / L_k, L_k = 10 at θ = 0
        rate = 0.9 / t**0.5
        avg = grads + rate * (avg - grads)
        norms = avg.norm(dim=1)
        torch.testing.assert_close(update, (norms.max() / (norms + 1e-8)) @ avg)


def test_db_mtl_gives_every_task_the_largest_norm():
    db = create_weighting("db_mtl", TASKS)
    A = torch.tensor([[1.0, 0, 0], [0, 50.0, 0], [0, 0, 0.2]], dtype=torch.float64)
    update = step(db, Linear(3), A)
    # orthogonal gradients: each component of d is one task's rescaled average
    torch.testing.assert_close(update.abs(), update.abs().max().expand(3), rtol=1e-5, atol=0)


@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_graddrop_in_parameters_mode_agrees_with_torchjd(leak):
    ours = create_weighting("graddrop", TASKS, leak=leak, mode="parameters")
    oracle = TorchjdGradDrop(leak=torch.full((3,), leak, dtype=torch.float64))
    A = draws(1, n=200, seed=2)[0]
    torch.manual_seed(5)
    got = step(ours, Linear(200), A)
    torch.manual_seed(5)
    expected = oracle(A)
    # (our purity carries LibMTL's 1e-7 guard in its denominator)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def test_graddrop_keeps_one_sign_per_entry_and_agreeing_gradients_whole():
    ours = create_weighting("graddrop", TASKS, mode="parameters")
    A = torch.tensor([[1.0, -2.0, 3.0], [2.0, -1.0, -3.0], [0.5, -0.5, 1.0]]).double()
    torch.manual_seed(0)
    update = step(ours, Linear(3), A)
    torch.testing.assert_close(update[:2], A[:, :2].sum(0))  # same signs: nothing dropped
    assert float(update[2]) in (4.0, -3.0)  # entry 3: the positive or the negative side


def test_graddrop_features_mode_marginalises_over_the_batch():
    """The paper's §3.2 signal: Σ_b sign(A_b) ∇_{A_b} L_k decides one mask per entry."""
    torch.manual_seed(0)
    features = torch.randn(4, 3, requires_grad=True)
    heads = torch.randn(2, 3)
    losses = {t: (features * heads[k]).sum() * (k + 1) for k, t in enumerate(["a", "b"])}
    per = torch.stack([heads[k].expand(4, 3) * (k + 1) for k in range(2)])  # (K, B, D)
    signal = (per * features.detach().sign()).sum(1)
    purity = 0.5 * (1 + signal.sum(0) / (signal.abs().sum(0) + 1e-7))
    ours = create_weighting("graddrop", ["a", "b"])
    ctx = StepContext([], features, 0, 0, task_parameters={"a": [], "b": []})
    torch.manual_seed(9)
    draw = torch.rand_like(purity)
    torch.manual_seed(9)
    ours.backward(losses, ctx)
    mask = ((purity > draw) & (signal > 0)) | ((purity < draw) & (signal < 0))
    torch.testing.assert_close(features.grad, (per * mask[:, None]).sum(0))


@pytest.mark.parametrize("warmup", [2, 3])
def test_excess_mtl_agrees_with_torchjd_after_a_warmup(warmup):
    ours = create_weighting("excess_mtl", TASKS, step_size=0.5, warmup_steps=warmup)
    oracle = ExcessMTLWeighting(robust_step_size=0.5, n_warmup_steps=warmup)
    model = Linear(5)
    for A in draws(6, seed=4):
        update = step(ours, model, A)
        w = oracle(A)  # sums to 1; ours sums to K
        torch.testing.assert_close(ours.weights, 3 * w.double(), rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(update, ours.weights @ A)


def test_excess_mtl_without_warmup_takes_its_first_estimate_as_the_baseline():
    ours = create_weighting("excess_mtl", TASKS, step_size=0.1)
    model = Linear(5)
    A1, A2 = draws(2, seed=6)
    step(ours, model, A1)
    assert torch.equal(ours.weights, torch.ones(3).double())  # (LibMTL: no move on step 1)
    risk1 = (A1**2 / (A1**2 + 1e-7).sqrt()).sum(1)
    step(ours, model, A2)
    squares = A1**2 + A2**2
    risk2 = (A2**2 / (squares + 1e-7).sqrt()).sum(1)
    w = torch.exp(0.1 * risk2 / (risk1 + 1e-7))
    torch.testing.assert_close(ours.weights, 3 * w / w.sum())


@pytest.mark.parametrize("name", ["moco", "db_mtl"])
def test_momentum_methods_refuse_the_features_mode(name):
    with pytest.raises(ValueError, match=r"mode='features'; .* runs in parameters mode only"):
        create_weighting(name, TASKS, mode="features")


@pytest.mark.parametrize("name", ["moco", "db_mtl", "excess_mtl"])
def test_row_buffers_resume_from_a_state_dict(name):
    first = create_weighting(name, TASKS)
    assert isinstance(first, RowWeighting)
    model = Linear(5)
    steps = draws(4, seed=8)
    for A in steps[:2]:
        step(first, model, A)
    restored = create_weighting(name, TASKS)
    restored.load_state_dict(first.state_dict())
    fresh = create_weighting(name, TASKS)
    expected = torch.stack([step(first, model, A) for A in steps[2:]])
    assert torch.equal(torch.stack([step(restored, model, A) for A in steps[2:]]), expected)
    again = torch.stack([step(fresh, model, A) for A in steps[2:]])
    assert not torch.allclose(again, expected)  # a strategy started afresh differs


def test_row_buffer_refuses_a_changed_model():
    moco = create_weighting("moco", TASKS)
    step(moco, Linear(5), draws(1)[0])
    with pytest.raises(ValueError, match=r"holds gradients of 5 entries but this step's have 4"):
        step(moco, Linear(4), draws(1, n=4)[0])
