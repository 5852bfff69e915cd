"""IMTL (Liu et al., ICLR 2021): IMTL-G's equal projections, IMTL-L's scales, and the hybrid.

IMTL-G: d = Σ α_t g_t with Σ α_t = 1 and d·u_t equal for every unit gradient u_t; closed form
α_{2:K} = g_1 Uᵀ (DUᵀ)⁻¹ with D = [g_1 − g_t], U = [u_1 − u_t]. IMTL-L: losses e^{s_t} L_t − s_t.
IMTL (hybrid): IMTL-G on the gradients of e^{s_t} L_t.
"""

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext
from attnmtl.weighting.imtl import IMTL, imtl_g
from attnmtl.weighting.registry import create_weighting

F64 = torch.float64


def units(g: Tensor) -> Tensor:
    return g / g.norm(dim=1, keepdim=True)


def paper_closed_form(g: np.ndarray) -> np.ndarray:
    """α from the paper's formula with task 1 as the reference, on explicit vectors."""
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d, big_u = g[0] - g[1:], u[0] - u[1:]
    rest = g[0] @ big_u.T @ np.linalg.inv(d @ big_u.T)
    return np.concatenate([[1 - rest.sum()], rest])


def test_equal_projections_onto_every_unit_gradient():
    g = torch.randn(5, 12, dtype=F64) * torch.tensor([[0.1], [1.0], [5.0], [0.5], [20.0]])
    imtl = create_weighting("imtl", tasks=list("abcde"), variant="g")
    alpha = imtl.combine(g @ g.T, torch.ones(5, dtype=F64), list(range(5)))
    d = alpha @ g
    projections = units(g) @ d
    torch.testing.assert_close(projections, projections[0].expand(5), rtol=1e-9, atol=0)
    assert alpha.sum().item() == pytest.approx(1.0)
    np.testing.assert_allclose(alpha.numpy(), paper_closed_form(g.numpy()), rtol=1e-8)


def test_two_tasks_bisect_the_angle():
    g = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=F64)
    # equal projections onto (1,0) and (0,1): d = λ(1,1), α ∝ 1/‖g_t‖: α = (1/4, 3/4)
    torch.testing.assert_close(imtl_g(g @ g.T), torch.tensor([0.25, 0.75], dtype=F64))


def test_one_task():
    assert imtl_g(torch.tensor([[2.0]], dtype=F64)).tolist() == [1.0]
    assert imtl_g(torch.tensor([[0.0]], dtype=F64)).tolist() == [1.0]


def test_collinear_gradients_stay_finite_and_balanced():
    g = torch.tensor([[1.0, 1.0, 0.0], [3.0, 3.0, 0.0], [0.0, 1.0, 2.0]], dtype=F64)
    alpha = imtl_g(g @ g.T)
    assert torch.isfinite(alpha).all() and alpha.sum().item() == pytest.approx(1.0)
    projections = units(g) @ (alpha @ g)
    torch.testing.assert_close(projections, projections[0].expand(3), rtol=1e-9, atol=1e-12)
    same = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=F64)
    alpha = imtl_g(same @ same.T)
    assert torch.isfinite(alpha).all() and alpha.sum().item() == pytest.approx(1.0)


def test_opposite_gradients_give_a_zero_update():
    g = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=F64)
    alpha = imtl_g(g @ g.T)  # d·u = d·(−u) forces d ⟂ u: d = 0, with α = (2/3, 1/3)
    torch.testing.assert_close(alpha, torch.tensor([2 / 3, 1 / 3], dtype=F64))
    torch.testing.assert_close(alpha @ g, torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)


def test_more_tasks_than_dimensions():
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], dtype=F64)
    # equal projections onto three directions of the plane: only d = 0 (Σα = 1 still)
    alpha = imtl_g(g @ g.T)
    assert alpha.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(alpha @ g, torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)


def test_a_zero_gradient_gets_no_weight():
    g = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]], dtype=F64)
    torch.testing.assert_close(imtl_g(g @ g.T), torch.tensor([0.0, 0.25, 0.75], dtype=F64))
    zeros = torch.zeros(3, 3, dtype=F64)
    alpha = imtl_g(zeros)
    assert torch.isfinite(alpha).all() and alpha.sum().item() == 1.0


def problem() -> tuple[nn.Parameter, dict[str, nn.Parameter], dict[str, Tensor]]:
    """A shared vector w (4,), one scalar head per task, three losses of different scales."""
    torch.manual_seed(3)
    w = nn.Parameter(torch.randn(4, dtype=F64))
    heads = {t: nn.Parameter(torch.tensor(1.0 + i, dtype=F64)) for i, t in enumerate("abc")}
    x = torch.randn(3, 4, dtype=F64)
    losses = {t: 10.0**i * (heads[t] * (x[i] @ w) - 1.0) ** 2 for i, t in enumerate("abc")}
    return w, heads, losses


def context(w, heads, scale=None) -> StepContext:
    ctx = StepContext([w], None, 0, 0, task_parameters={t: [h] for t, h in heads.items()})
    if scale is not None:
        ctx.scale = scale
    return ctx


@pytest.mark.parametrize("amp", [1.0, 8.0])
def test_hybrid_is_imtl_g_on_the_scaled_losses_gradients(amp):
    imtl = create_weighting("imtl", tasks=list("abc"))
    assert isinstance(imtl, IMTL) and imtl.variant == "hybrid"
    for k, p in enumerate(imtl.log_scales):
        p.data.fill_([0.3, -0.5, 0.1][k])
    s = torch.tensor([p.item() for p in imtl.log_scales], dtype=F64)  # as stored (float32)
    w, heads, losses = problem()
    raw = torch.stack(
        [torch.autograd.grad(loss, w, retain_graph=True)[0] for loss in losses.values()]
    )
    own = [torch.autograd.grad(losses[t], heads[t], retain_graph=True)[0] for t in "abc"]
    values = torch.stack(list(losses.values())).detach()
    weights = imtl.backward(losses, context(w, heads, (lambda t: t * amp) if amp != 1 else None))
    scaled = s.exp()[:, None] * raw  # gradients of e^{s_t} L_t
    alpha = torch.from_numpy(paper_closed_form(scaled.numpy()))
    torch.testing.assert_close(w.grad, amp * alpha @ scaled)
    projections = units(raw) @ w.grad
    torch.testing.assert_close(projections, projections[0].expand(3))
    for k, t in enumerate("abc"):
        torch.testing.assert_close(heads[t].grad, amp * s[k].exp() * own[k])
        expected_s = amp * (s[k].exp() * values[k] - 1)
        assert imtl.log_scales[k].grad.item() == pytest.approx(expected_s.item(), rel=1e-6)
        assert weights[t].item() == pytest.approx((alpha[k] * s[k].exp()).item(), rel=1e-6)


def test_variant_l_backpropagates_the_scaled_losses():
    imtl = IMTL(list("abc"), variant="l")
    assert imtl.needs == "losses" and not imtl.wants_split()
    imtl.log_scales[1].data.fill_(0.7)
    w, heads, losses = problem()
    reference = losses["a"] + math.exp(0.7) * losses["b"] - 0.7 + losses["c"]  # s = (0, 0.7, 0)
    expected = torch.autograd.grad(reference, w, retain_graph=True)[0]
    values = [losses[t].item() for t in "abc"]
    weights = imtl.backward(losses, context(w, heads))
    torch.testing.assert_close(w.grad, expected)
    assert weights["b"].item() == pytest.approx(math.exp(0.7))
    assert imtl.log_scales[1].grad.item() == pytest.approx(math.exp(0.7) * values[1] - 1)
    assert imtl.log_scales[0].grad.item() == pytest.approx(values[0] - 1)


def test_variant_g_is_imtl_g_on_the_raw_gradients_and_learns_nothing():
    imtl = IMTL(list("abc"), variant="g")
    assert list(imtl.parameters()) == []
    w, heads, losses = problem()
    raw = torch.stack(
        [torch.autograd.grad(loss, w, retain_graph=True)[0] for loss in losses.values()]
    )
    weights = imtl.backward(losses, context(w, heads))
    alpha = torch.from_numpy(paper_closed_form(raw.numpy()))
    torch.testing.assert_close(w.grad, alpha @ raw)
    assert [weights[t].item() for t in "abc"] == pytest.approx(alpha.tolist())


def test_an_absent_task_keeps_its_scale_without_gradient():
    imtl = IMTL(list("abcd"))
    w, heads, losses = problem()
    imtl.backward(losses, context(w, heads))
    assert imtl.log_scales[3].grad is None
    assert all(imtl.log_scales[k].grad is not None for k in range(3))


def test_state_dict_round_trip():
    imtl = IMTL(list("abc"))
    with torch.no_grad():
        for k, p in enumerate(imtl.log_scales):
            p.fill_(0.1 * k - 0.2)
    restored = IMTL(list("abc"))
    restored.load_state_dict(imtl.state_dict())
    assert [p.item() for p in restored.log_scales] == pytest.approx([-0.2, -0.1, 0.0])


def test_bad_variant_is_rejected():
    with pytest.raises(ValueError, match="variant='both'; expected one of: g, l, hybrid"):
        IMTL(["a", "b"], variant="both")  # type: ignore[arg-type]
