"""GradNorm (Chen et al., ICML 2018): w.grad = ∂/∂w Σ_i |w_i ‖g_i‖ − Ḡ r_i^α| (target constant).

Ḡ = mean_i w_i ‖g_i‖, r_i = L̃_i / mean(L̃), L̃_i = L_i(t) / L_i(0); the update uses c = w, and
after the optimizer step the weights are renormalised to sum to the number of tasks.
"""

import math

import pytest
import torch
from torch import Tensor, nn

from attnmtl.weighting import StepContext
from attnmtl.weighting.gradnorm import GradNorm
from attnmtl.weighting.registry import create_weighting


def gradnorm(tasks: str = "ab", **options) -> GradNorm:
    weighting = create_weighting("gradnorm", list(tasks), **options)
    assert isinstance(weighting, GradNorm)
    return weighting


def weights_of(weighting: GradNorm) -> Tensor:
    return torch.stack([w.detach() for w in weighting.weights])


def grads_of(weighting: GradNorm) -> list[float | None]:
    return [None if w.grad is None else w.grad.item() for w in weighting.weights]


def set_weights(weighting: GradNorm, values: list[float]) -> None:
    with torch.no_grad():
        for w, v in zip(weighting.weights, values, strict=True):
            w.fill_(v)


def run(weighting: GradNorm, norms: list[float], losses: list[float], index: list[int]) -> Tensor:
    """combine() on orthogonal gradients of the given norms (Gram = diag(norms²))."""
    gram = torch.diag(torch.tensor(norms, dtype=torch.float64) ** 2)
    return weighting.combine(gram, torch.tensor(losses, dtype=torch.float64), index)


def test_weight_gradient_by_hand_for_two_tasks():
    weighting = gradnorm(alpha=1.5)
    # first step: L(0) = L, r = (1, 1); G_W = (3, 1), target = mean = 2
    c = run(weighting, [3.0, 1.0], [2.0, 4.0], [0, 1])
    torch.testing.assert_close(c, torch.ones(2).double())
    assert grads_of(weighting) == [3.0, -1.0]  # sign(3 - 2)·3, sign(1 - 2)·1
    # later: w = (0.2, 1.8), L = (1.8, 1.0) against L(0) = (2, 4): L̃ = (0.9, 0.25),
    # r = L̃ / 0.575 = (1.565, 0.435); G_W = (0.2·3, 1.8·1) = (0.6, 1.8), Ḡ = 1.2,
    # targets 1.2·1.565^1.5 ≈ 2.35 and 1.2·0.435^1.5 ≈ 0.34: signs (−, +)
    for w in weighting.weights:
        w.grad = None
    set_weights(weighting, [0.2, 1.8])
    c = run(weighting, [3.0, 1.0], [1.8, 1.0], [0, 1])
    torch.testing.assert_close(c, torch.tensor([0.2, 1.8]).double())
    assert grads_of(weighting) == [-3.0, 1.0]


def test_weight_gradient_matches_autograd_of_the_gradnorm_loss():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(4, 10, generator=g, dtype=torch.float64)
    grads = grads * torch.tensor([[0.5], [1.0], [2.0], [4.0]]).double()
    initial = torch.tensor([2.0, 1.0, 3.0, 0.5]).double()
    later = torch.tensor([1.0, 0.9, 1.0, 0.45]).double()
    weighting = gradnorm("abcd", alpha=0.7)
    weighting.combine(grads @ grads.T, initial, [0, 1, 2, 3])
    for w in weighting.weights:
        w.grad = None
    values = [0.7, 1.3, 0.9, 1.1]
    set_weights(weighting, values)
    weighting.combine(grads @ grads.T, later, [0, 1, 2, 3])
    # the definition, differentiated by autograd
    w = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    g_w = torch.linalg.vector_norm(w[:, None] * grads, dim=1)
    ratios = later / initial
    target = (g_w.mean() * (ratios / ratios.mean()) ** 0.7).detach()
    (expected,) = torch.autograd.grad((g_w - target).abs().sum(), w)
    torch.testing.assert_close(
        torch.tensor(grads_of(weighting)).double(), expected, rtol=1e-6, atol=0
    )


def test_initial_losses_are_recorded_the_first_time_a_task_is_present():
    weighting = gradnorm("abc")
    run(weighting, [1.0, 1.0], [5.0, 7.0], [0, 2])
    assert weighting.initial_losses[0].item() == 5.0 and weighting.initial_losses[2].item() == 7.0
    assert math.isnan(weighting.initial_losses[1].item())
    assert grads_of(weighting)[1] is None  # absent: no gradient
    run(weighting, [1.0, 1.0], [3.0, 2.0], [0, 1])
    assert weighting.initial_losses.tolist() == [5.0, 2.0, 7.0]  # a's kept, b's set now
    # with L(0) from its first step, b's ratio is 1 and a's 0.6: r = (0.75, 1.25)
    for w in weighting.weights:
        w.grad = None
    run(weighting, [1.0, 2.0], [3.0, 2.0], [0, 1])
    # G_W = (1, 2), Ḡ = 1.5: targets 1.5·0.75^1.5 ≈ 0.97 (a above it), 1.5·1.25^1.5 ≈ 2.10 (b below)
    assert grads_of(weighting) == [1.0, -2.0, None]


def test_renormalisation_after_the_step_sums_to_the_task_count():
    weighting = gradnorm("abc", alpha=1.0)
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.1)
    run(weighting, [3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [0, 1, 2])  # grads (3, -1, 0)
    optimizer.step()
    torch.testing.assert_close(weights_of(weighting), torch.tensor([0.7, 1.1, 1.0]))
    weighting.after_step(lambda: pytest.fail("GradNorm needs no recomputation"))
    torch.testing.assert_close(weights_of(weighting), torch.tensor([0.7, 1.1, 1.0]) * 3 / 2.8)
    set_weights(weighting, [1.0, 2.0, 3.0])
    weighting._pending = [0, 1, 2]
    weighting.after_step(lambda: {})
    torch.testing.assert_close(weights_of(weighting), torch.tensor([0.5, 1.0, 1.5]))
    assert weighting._pending is None
    weighting.after_step(lambda: {})  # nothing pending: nothing moves
    torch.testing.assert_close(weights_of(weighting), torch.tensor([0.5, 1.0, 1.5]))


def test_masked_step_renormalises_only_the_present_tasks():
    weighting = gradnorm("abc")
    set_weights(weighting, [0.5, 1.0, 1.5])
    run(weighting, [1.0, 2.0], [1.0, 1.0], [0, 2])
    set_weights(weighting, [1.0, 1.0, 3.0])  # what an optimizer step made of a and c
    weighting.after_step(lambda: {})
    # b keeps its 1.0; a and c share 3 - 1 = 2 in the ratio 1 : 3
    torch.testing.assert_close(weights_of(weighting), torch.tensor([0.5, 1.0, 1.5]))


def test_weights_are_clamped_positive_before_renormalising():
    weighting = gradnorm("ab")
    run(weighting, [1.0, 1.0], [1.0, 1.0], [0, 1])
    set_weights(weighting, [-0.5, 2.0])
    weighting.after_step(lambda: {})
    w = weights_of(weighting)
    assert (w > 0).all() and w.sum().item() == pytest.approx(2.0)
    assert w[0].item() == pytest.approx(2.0 * 1e-6 / (2.0 + 1e-6))


def test_state_dict_round_trip():
    weighting = gradnorm("abc")
    run(weighting, [1.0, 2.0], [4.0, 6.0], [0, 2])
    set_weights(weighting, [0.5, 1.25, 1.25])
    state = weighting.state_dict()
    assert set(state) == {"coefficients", "initial_losses", "weights.0", "weights.1", "weights.2"}
    restored = gradnorm("abc")
    restored.load_state_dict(state)
    torch.testing.assert_close(weights_of(restored), torch.tensor([0.5, 1.25, 1.25]))
    torch.testing.assert_close(restored.initial_losses, weighting.initial_losses, equal_nan=True)
    assert math.isnan(restored.initial_losses[1].item())


def test_single_task():
    weighting = gradnorm("ab")
    set_weights(weighting, [0.5, 1.5])
    c = run(weighting, [2.0], [3.0], [1])
    torch.testing.assert_close(c, torch.tensor([1.5]).double())
    assert grads_of(weighting) == [None, 0.0]  # its own target: no force
    assert weighting.initial_losses[1].item() == 3.0


def test_zero_losses_and_gradients_stay_finite():
    weighting = gradnorm("ab")
    c = run(weighting, [0.0, 0.0], [0.0, 0.0], [0, 1])
    assert torch.isfinite(c).all()
    run(weighting, [1.0, 0.0], [0.0, 1.0], [0, 1])
    assert all(math.isfinite(g) for g in grads_of(weighting))


def test_backward_uses_the_weights_and_sets_their_gradient():
    shared = nn.Parameter(torch.tensor([1.0, 2.0]))
    heads = {"a": nn.Parameter(torch.tensor(1.0)), "b": nn.Parameter(torch.tensor(2.0))}
    weighting = gradnorm("ab")
    set_weights(weighting, [0.5, 1.5])
    losses = {
        "a": heads["a"] * shared[0] ** 2,  # ∇_shared = (2, 0), ∇_head = 1
        "b": heads["b"] * shared[1] ** 2,  # ∇_shared = (0, 8), ∇_head = 4
    }
    ctx = StepContext([shared], None, 0, 0, task_parameters={t: [heads[t]] for t in "ab"})
    reported = weighting.backward(losses, ctx)
    assert reported["a"].item() == pytest.approx(0.5) and reported["b"].item() == 1.5
    torch.testing.assert_close(shared.grad, torch.tensor([0.5 * 2.0, 1.5 * 8.0]))
    assert heads["a"].grad.item() == pytest.approx(0.5) and heads["b"].grad.item() == 6.0
    # G_W = (1, 12), Ḡ = 6.5, r = 1 (first step): a below, b above
    assert grads_of(weighting) == [-2.0, 8.0]


def test_reused_steps_leave_the_weights_alone():
    weighting = gradnorm("ab", update_every=2)
    shared = nn.Parameter(torch.tensor([1.0, 2.0]))
    losses = {"a": shared[0] ** 2, "b": shared[1] ** 2}
    ctx = StepContext([shared], None, 1, 0, task_parameters={t: [] for t in "ab"})
    weighting.backward(losses, ctx)  # step 1: reuse
    assert grads_of(weighting) == [None, None]
    weighting.after_step(lambda: {})
    torch.testing.assert_close(weights_of(weighting), torch.ones(2))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"alpha": -1.0}, r"^alpha=-1.0; expected a finite number >= 0$"),
        ({"alpha": math.nan}, r"^alpha=nan"),
        ({"engine": "fast"}, r"^engine='fast'"),
    ],
)
def test_options_are_validated(options, match):
    with pytest.raises(ValueError, match=match):
        gradnorm(**options)
