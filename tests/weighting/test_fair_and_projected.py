"""FairGrad, DualProj, ConFIG and CR-MOGM against their definitions, on hand-made gradients,
and against torchjd (an independent implementation, used here as an oracle only)."""

import pytest
import torch
from torch import Tensor, nn
from torchjd.aggregation import ConFIG as TorchjdConFIG
from torchjd.aggregation import (
    CRMOGMWeighting,
    DualProjWeighting,
    FairGradWeighting,
    UPGradWeighting,
)
from torchjd.linalg import QuadprogProjector

from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext
from attnmtl.weighting.fairgrad import fairgrad_weights
from attnmtl.weighting.gradient import GradientWeighting

TASKS = [f"t{i}" for i in range(8)]


def gradients(k: int, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(k, n, dtype=torch.float64, generator=g)
    return rows * torch.rand(k, 1, dtype=torch.float64, generator=g).mul(3).exp()


def coefficients(name: str, G: Tensor, **options) -> Tensor:
    k = G.shape[0]
    weighting = create_weighting(name, TASKS[:k], **options)
    assert isinstance(weighting, GradientWeighting)
    c = weighting.combine(G @ G.T, torch.ones(k, dtype=G.dtype), list(range(k)))
    assert c.shape == (k,) and bool(torch.isfinite(c).all())
    return c


# --- FairGrad ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 10.0])
def test_fairgrad_orthogonal_gradients_have_the_closed_form(alpha):
    # GGᵀ diagonal: ‖g_k‖² w_k = w_k^(-1/α)  =>  w_k = ‖g_k‖^(-2α/(1+α))
    norms = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    w = fairgrad_weights(torch.diag(norms**2), alpha)
    torch.testing.assert_close(w, norms.pow(-2 * alpha / (1 + alpha)), rtol=1e-8, atol=0)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("k", [2, 3, 8])
def test_fairgrad_solves_its_equation_and_agrees_with_torchjd(alpha, k):
    G = gradients(k, 40, seed=k)
    gram = G @ G.T
    w = fairgrad_weights(gram, alpha)
    assert bool((w > 0).all())
    power = w.pow(-1 / alpha)
    assert float(((gram @ w - power) / power).abs().max()) < 1e-6
    oracle = FairGradWeighting(alpha)(gram)
    torch.testing.assert_close(w, oracle, rtol=1e-6, atol=0)


def test_fairgrad_large_alpha_equalises_the_utilities():
    G = gradients(4, 30, seed=3)
    w = coefficients("fairgrad", G, alpha=200.0)
    utility = G @ (w @ G)  # u_k = g_kᵀd
    assert float(utility.max() / utility.min()) < 1.1


def test_fairgrad_zero_gradient_gets_no_weight():
    G = gradients(3, 10, seed=1)
    G[1] = 0
    w = coefficients("fairgrad", G)
    assert w[1] == 0 and bool((w[[0, 2]] > 0).all())


def test_fairgrad_rejects_a_bad_alpha():
    with pytest.raises(ValueError, match=r"alpha=0.0; expected a finite number > 0"):
        create_weighting("fairgrad", ["a", "b"], alpha=0.0)


# --- DualProj ----------------------------------------------------------------------------


def test_dualproj_without_conflict_is_the_mean():
    G = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(coefficients("dualproj", G), torch.full((3,), 1 / 3).double())


def test_dualproj_by_hand():
    # g1 = (1, 0), g2 = (-1, 1): the mean (0, 0.5) conflicts with nothing (g1·m = 0), so
    # take g2 = (-2, 1): mean (-0.5, 0.5), g1·m = -0.5 < 0; the projection onto g1·d >= 0
    # keeps the g2 side: d = (0, 0.5), with g2·d = 0.5 >= 0.
    G = torch.tensor([[1.0, 0.0], [-2.0, 1.0]], dtype=torch.float64)
    d = coefficients("dualproj", G) @ G
    torch.testing.assert_close(d, torch.tensor([0.0, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("seed", range(12))
def test_dualproj_agrees_with_torchjd_and_conflicts_with_no_task(seed):
    k = 2 + seed % 4
    G = gradients(k, 12, seed)
    d = coefficients("dualproj", G) @ G
    assert bool((G @ d >= -1e-9 * G.norm(dim=1) * G.norm(dim=1).max()).all())
    oracle = DualProjWeighting(projector=QuadprogProjector(norm_eps=0.0, reg_eps=1e-12))
    expected = oracle(G @ G.T) @ G
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=1e-9 * float(G.norm()))


# --- ConFIG ------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(2, 5), (3, 20), (5, 3), (8, 40)])
def test_config_agrees_with_torchjd(k, n):
    G = gradients(k, n, seed=k * n)
    d = coefficients("config", G) @ G
    torch.testing.assert_close(d, TorchjdConFIG()(G), rtol=1e-9, atol=1e-12)


def test_config_makes_equal_angles_and_its_length_is_the_projections_sum():
    G = gradients(4, 30, seed=7)
    d = coefficients("config", G) @ G
    cosines = (G @ d) / (G.norm(dim=1) * d.norm())
    assert float(cosines.min()) > 0
    torch.testing.assert_close(cosines, cosines.mean().expand(4))
    # d = (Σ_k g_k·d̂) d̂
    torch.testing.assert_close(d.norm(), (G @ (d / d.norm())).sum())


def test_config_two_orthogonal_gradients_by_hand():
    # u1 = e1, u2 = e2: v = (1, 1), d̂ = (1, 1)/√2, length (3 + 4)/√2 → d = (3.5, 3.5)
    G = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(coefficients("config", G) @ G, torch.tensor([3.5, 3.5]).double())


def test_config_ignores_a_zero_gradient():
    G = gradients(3, 10, seed=2)
    G[1] = 0
    c = coefficients("config", G)
    assert c[1] == 0
    torch.testing.assert_close(c @ G, TorchjdConFIG()(G), rtol=1e-9, atol=1e-12)


# --- CR-MOGM -----------------------------------------------------------------------------


def test_cr_mogm_smooths_the_wrapped_weights_as_torchjd():
    alpha = 0.7
    ours = create_weighting("cr_mogm", TASKS[:3], method="upgrad", alpha=alpha)
    exact = QuadprogProjector(norm_eps=0.0, reg_eps=1e-12)
    oracle = CRMOGMWeighting(UPGradWeighting(projector=exact), alpha=alpha)
    for seed in range(5):
        G = gradients(3, 6, seed)
        c = ours.combine(G @ G.T, torch.ones(3).double(), [0, 1, 2])
        torch.testing.assert_close(c, oracle(G @ G.T).double(), rtol=1e-5, atol=1e-6)


def test_cr_mogm_first_step_is_the_wrapped_method_and_then_an_ema():
    grams = [gradients(2, 4, s) for s in (1, 2)]
    inner = create_weighting("cagrad", ["a", "b"], c=0.4)
    wrapped = create_weighting(
        "cr_mogm", ["a", "b"], method="cagrad", alpha=0.5, options={"c": 0.4}
    )
    first = wrapped.combine(grams[0] @ grams[0].T, torch.ones(2).double(), [0, 1])
    torch.testing.assert_close(first, inner.combine(grams[0] @ grams[0].T, None, [0, 1]))
    second = wrapped.combine(grams[1] @ grams[1].T, torch.ones(2).double(), [0, 1])
    fresh = inner.combine(grams[1] @ grams[1].T, None, [0, 1])
    torch.testing.assert_close(second, 0.5 * first + 0.5 * fresh)


def test_cr_mogm_absent_task_keeps_its_weight():
    wrapped = create_weighting("cr_mogm", ["a", "b", "c"], method="mgda", alpha=0.9)
    G = gradients(3, 5, 0)
    wrapped.combine(G @ G.T, None, [0, 1, 2])
    kept = wrapped.smoothed[2].clone()
    H = G[:2]
    wrapped.combine(H @ H.T, None, [0, 1])
    assert wrapped.smoothed[2] == kept


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "gradnorm"}, r"method='gradnorm'; expected one of: .*mgda"),
        ({"method": "dwa"}, r"method='dwa'; expected one of"),
        ({"alpha": 1.0}, r"alpha=1.0; expected a number in \[0, 1\)"),
        ({"options": {"mode": "features"}}, r"set mode on cr_mogm itself"),
        ({"method": "cagrad", "options": {"k": 1}}, r"'k'"),
    ],
)
def test_cr_mogm_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_weighting("cr_mogm", ["a", "b"], **kwargs)


# --- log losses and gradient statistics, on every Gram method ------------------------------


class Linear(nn.Module):
    """Losses L_k = exp(a_kᵀθ): ∇L_k = L_k a_k and ∇log L_k = a_k, exactly."""

    def __init__(self, A: Tensor) -> None:
        super().__init__()
        self.A = A
        self.theta = nn.Parameter(torch.zeros(A.shape[1], dtype=A.dtype))

    def losses(self, scale: Tensor) -> dict[str, Tensor]:
        values = (self.A @ self.theta).exp() * scale
        return {TASKS[k]: values[k] for k in range(len(values))}


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mgda", {}),
        ("cagrad", {}),
        ("imtl", {"variant": "g"}),
        ("fairgrad", {}),
        ("config", {}),
        ("dualproj", {}),
    ],
)
def test_log_losses_make_the_update_independent_of_each_loss_scale(name, options):
    A = gradients(3, 6, seed=4)
    updates = []
    for scale in ([1.0, 1.0, 1.0], [100.0, 0.01, 3.0]):
        model = Linear(A)
        weighting = create_weighting(name, TASKS[:3], log_losses=True, **options)
        ctx = StepContext([model.theta], None, 0, 0, task_parameters={t: [] for t in TASKS[:3]})
        weights = weighting.backward(model.losses(torch.tensor(scale, dtype=A.dtype)), ctx)
        assert model.theta.grad is not None
        updates.append(model.theta.grad.clone())
        # the reported weight is the factor on the raw loss: c_k / L_k
        raw = (torch.stack(list(weights.values())) * torch.tensor(scale).double()) @ A
        torch.testing.assert_close(raw, model.theta.grad)
    torch.testing.assert_close(updates[0], updates[1])


def test_gradient_stats_come_from_the_gram_matrix():
    A = torch.tensor([[3.0, 0.0], [-1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    model = Linear(A)
    weighting = create_weighting("mgda", TASKS[:3], log_losses=True)
    assert weighting.gradient_stats() is None
    ctx = StepContext([model.theta], None, 0, 0, task_parameters={t: [] for t in TASKS[:3]})
    weighting.backward(model.losses(torch.ones(3, dtype=A.dtype)), ctx)
    stats = weighting.gradient_stats()
    assert stats is not None and stats.tasks == ("t0", "t1", "t2")
    torch.testing.assert_close(stats.norms, torch.tensor([3.0, 2**0.5, 2.0]).double())
    logged = stats.as_log()
    assert logged["cos"] == pytest.approx({"t0|t1": -(2**-0.5), "t0|t2": 0.0, "t1|t2": 2**-0.5})
    assert create_weighting("equal", ["a"]).gradient_stats() is None


def test_imtl_refuses_log_losses_where_its_loss_scales_would_do_nothing():
    with pytest.raises(ValueError, match=r"log_losses with variant='hybrid'.*use variant=g"):
        create_weighting("imtl", ["a", "b"], log_losses=True)
