"""GradVac (Wang et al., ICLR 2021): the correction reaches the target cosine, the EMA targets.

For each task i and each other task j in a random order: φ = cos(g_i', g_j); if φ < φ̂_ij,
g_i' += ‖g_i'‖ (φ̂ √(1−φ²) − φ √(1−φ̂²)) / (‖g_j‖ √(1−φ̂²)) g_j; then φ̂_ij ← (1−β) φ̂_ij + β φ.
The update is Σ_i g_i'.
"""

import math

import pytest
import torch
from torch import Tensor

from attnmtl.weighting.gradvac import GradVac
from attnmtl.weighting.pcgrad import random_orders
from attnmtl.weighting.registry import create_weighting

F64 = torch.float64


def combine(gradvac: GradVac, g: Tensor, index: list[int] | None = None) -> Tensor:
    idx = list(range(len(g))) if index is None else index
    c = gradvac.combine(g @ g.T, torch.zeros(len(g), dtype=F64), idx)
    assert torch.isfinite(c).all()
    return c


def cosine(a: Tensor, b: Tensor) -> float:
    return (a @ b / (a.norm() * b.norm())).item()


def algorithm_1(g: Tensor, targets: Tensor, orders: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """The paper's loop on explicit vectors: (update, new targets)."""
    targets = targets.clone()
    total = torch.zeros_like(g[0])
    for i in range(len(g)):
        gi = g[i].clone()
        for j in orders[:, i].tolist():
            phi = cosine(gi, g[j])
            goal = targets[i, j].item()
            if phi < goal:
                step = (goal * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - goal**2)) / (
                    g[j].norm() * math.sqrt(1 - goal**2)
                )
                gi = gi + gi.norm() * step * g[j]
            targets[i, j] = (1 - beta) * goal + beta * phi
        total += gi
    return total, targets


def test_the_corrected_gradient_has_exactly_the_target_cosine():
    g = torch.tensor([[1.0, 0.0, 0.0], [-0.6, 0.8, 0.3]], dtype=F64)
    gradvac = GradVac(["a", "b"])
    gradvac.targets.copy_(torch.tensor([[0.0, 0.5], [-1.0, 0.0]]))  # b is never corrected
    d = combine(gradvac, g) @ g
    corrected_a = d - g[1]
    assert cosine(corrected_a, g[1]) == pytest.approx(0.5, abs=1e-12)
    # the added vector is a multiple of g_b: g_a' - g_a is parallel to g_b
    delta = corrected_a - g[0]
    assert abs(cosine(delta, g[1])) == pytest.approx(1.0, abs=1e-12)


def test_correction_and_ema_by_hand():
    # unit gradients at cosine -0.6, target 0.5 for (a, b)
    g = torch.tensor([[1.0, 0.0], [-0.6, 0.8]], dtype=F64)
    gradvac = GradVac(["a", "b"], beta=0.01)
    gradvac.targets.copy_(torch.tensor([[0.0, 0.5], [-1.0, 0.0]]))
    c = combine(gradvac, g)
    step = (0.5 * 0.8 + 0.6 * math.sqrt(0.75)) / math.sqrt(0.75)  # ‖g_a‖ = ‖g_b‖ = 1
    torch.testing.assert_close(c, torch.tensor([1.0, 1.0 + step], dtype=F64))
    # φ̂_ab ← 0.99 · 0.5 + 0.01 · (-0.6); φ̂_ba ← 0.99 · (-1) + 0.01 · (-0.6)
    expected = torch.tensor([[0.0, 0.489], [-0.996, 0.0]], dtype=F64)
    torch.testing.assert_close(gradvac.targets, expected)


def test_no_change_when_the_cosine_is_at_or_above_the_target():
    g = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=F64)
    gradvac = GradVac(["a", "b", "c"])  # targets 0: every cosine (0.6, 0, 0.8) is >= 0
    assert combine(gradvac, g).tolist() == [1.0, 1.0, 1.0]
    gradvac.targets.fill_(0.8)
    gradvac.targets[0, 1] = 0.6  # a meets b exactly at its target
    gradvac.targets[0, 2] = 0.0
    gradvac.targets[1, 0] = gradvac.targets[1, 2] = 0.5
    gradvac.targets[2, 0] = -0.1
    gradvac.targets[2, 1] = 0.7  # c·b = 0.8 >= 0.7
    torch.manual_seed(1)
    assert combine(gradvac, g).tolist() == [1.0, 1.0, 1.0]


def test_ema_from_zero_by_hand():
    g = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=F64)  # cosine 1/√2, no correction at 0
    gradvac = GradVac(["a", "b"], beta=0.25)
    combine(gradvac, g)
    first = 0.25 / math.sqrt(2)
    assert gradvac.targets[0, 1].item() == pytest.approx(first)
    assert gradvac.targets[1, 0].item() == pytest.approx(first)
    combine(gradvac, g)  # below the target now? no: 1/√2 > first
    assert gradvac.targets[0, 1].item() == pytest.approx(0.75 * first + 0.25 / math.sqrt(2))
    assert gradvac.targets.diagonal().tolist() == [0.0, 0.0]


def test_gram_form_equals_algorithm_1_on_explicit_vectors():
    g = torch.randn(4, 6, dtype=F64)
    g[1] = -0.7 * g[0] + 0.4 * g[1]
    targets = torch.tensor(
        [[0.0, 0.3, -0.2, 0.6], [0.1, 0.0, 0.8, -0.5], [0.4, 0.2, 0.0, 0.9], [0.7, 0.0, 0.3, 0.0]],
        dtype=F64,
    )
    for seed in range(3):
        gradvac = GradVac(["a", "b", "c", "d"], beta=0.1)
        gradvac.targets.copy_(targets)
        torch.manual_seed(seed)
        d = combine(gradvac, g) @ g
        torch.manual_seed(seed)
        expected, new_targets = algorithm_1(g, targets, random_orders(4), beta=0.1)
        torch.testing.assert_close(d, expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gradvac.targets, new_targets, rtol=1e-9, atol=1e-12)


def test_zero_targets_reduce_to_pcgrad_projections():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
    gradvac = GradVac(["a", "b"])
    torch.testing.assert_close(combine(gradvac, g), torch.tensor([2.0, 1.5], dtype=F64))


def test_a_masked_step_leaves_absent_pairs_untouched():
    gradvac = create_weighting("gradvac", tasks=["a", "b", "c", "d"], beta=0.5)
    assert isinstance(gradvac, GradVac)
    before = torch.arange(16, dtype=F64).view(4, 4) / 20 - 0.4
    gradvac.targets.copy_(before)
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)  # present: b and d, cosine 0
    combine(gradvac, g, index=[1, 3])
    changed = (gradvac.targets != before).nonzero().tolist()
    assert sorted(changed) == [[1, 3], [3, 1]]
    assert gradvac.targets[1, 3].item() == pytest.approx(0.5 * before[1, 3].item())


def test_zero_and_opposite_gradients_stay_finite():
    g = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-2.0, -4.0]], dtype=F64)
    gradvac = GradVac(["a", "b", "c"])
    gradvac.targets.fill_(0.3)
    d = combine(gradvac, g) @ g
    assert torch.isfinite(d).all()
    # pairs with the zero gradient have no cosine: their targets do not move
    assert gradvac.targets[0].tolist() == [0.3] * 3 and gradvac.targets[:, 0].tolist() == [0.3] * 3
    # b and c are opposite: each is corrected onto the other's line, i.e. to zero (as PCGrad)
    torch.testing.assert_close(d, torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)


def test_a_target_of_one_stays_finite():
    g = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=F64)
    gradvac = GradVac(["a", "b"])
    gradvac.targets.fill_(1.0)
    c = combine(gradvac, g)
    assert torch.isfinite(c).all() and c.abs().max() < 1e4


def test_one_task():
    gradvac = GradVac(["a", "b"])
    c = combine(gradvac, torch.tensor([[3.0, 4.0]], dtype=F64), index=[1])
    assert c.tolist() == [1.0]
    assert gradvac.targets.abs().sum().item() == 0.0


def test_state_dict_round_trip():
    gradvac = GradVac(["a", "b", "c"])
    combine(gradvac, torch.randn(3, 5, dtype=F64))
    assert gradvac.targets.abs().sum() > 0
    restored = GradVac(["a", "b", "c"])
    restored.load_state_dict(gradvac.state_dict())
    torch.testing.assert_close(restored.targets, gradvac.targets)
    g = torch.randn(3, 5, dtype=F64)
    torch.manual_seed(7)
    expected = combine(gradvac, g)
    torch.manual_seed(7)
    torch.testing.assert_close(combine(restored, g), expected)


@pytest.mark.parametrize("beta", [0.0, -0.1, 1.5, math.nan, True])
def test_bad_beta_is_rejected(beta):
    with pytest.raises(ValueError, match=f"beta={beta!r}; expected"):
        GradVac(["a", "b"], beta=beta)
