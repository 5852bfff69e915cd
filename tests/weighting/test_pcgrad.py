"""PCGrad (Yu et al., NeurIPS 2020): projections by hand, and against Algorithm 1 on explicit G.

g_i' starts at g_i; for each other task j in a random order, if g_i'·g_j < 0,
g_i' -= (g_i'·g_j / ‖g_j‖²) g_j (the original g_j); the update is Σ_i g_i'.
"""

import itertools
from collections import Counter

import pytest
import torch
from torch import Tensor

from attnmtl.weighting.pcgrad import PCGrad, random_orders
from attnmtl.weighting.registry import create_weighting

TASKS = ["a", "b", "c", "d", "e"]


def update(g: Tensor, index: list[int] | None = None, tasks=TASKS) -> Tensor:
    """d = cᵀG from a PCGrad built by name, on the Gram matrix of the rows of ``g``."""
    pcgrad = create_weighting("pcgrad", tasks=tasks)
    idx = list(range(len(g))) if index is None else index
    c = pcgrad.combine(g @ g.T, torch.zeros(len(g), dtype=g.dtype), idx)
    assert c.shape == (len(g),) and torch.isfinite(c).all()
    return c @ g


def algorithm_1(g: Tensor, orders: Tensor) -> Tensor:
    """The paper's loop on explicit vectors; ``orders[:, i]`` is task i's visiting order."""
    total = torch.zeros_like(g[0])
    for i in range(len(g)):
        projected = g[i].clone()
        for j in orders[:, i].tolist():
            dot = projected @ g[j]
            if dot < 0:
                projected = projected - dot / (g[j] @ g[j]) * g[j]
        total += projected
    return total


def test_two_conflicting_gradients_by_hand():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    # g1·g2 = -1: g1' = g1 + g2/2 = (0.5, 0.5), g2' = g2 + g1 = (0, 1); d = (0.5, 1.5)
    pcgrad = PCGrad(["a", "b"])
    c = pcgrad.combine(g @ g.T, torch.zeros(2, dtype=torch.float64), [0, 1])
    torch.testing.assert_close(c, torch.tensor([2.0, 1.5], dtype=torch.float64))
    d = c @ g
    assert (g @ d >= 0).all()  # the update conflicts with neither task


def test_non_conflicting_gradients_are_summed_unchanged():
    g = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.2, 2.0]], dtype=torch.float64)
    pcgrad = PCGrad(["a", "b", "c"])
    c = pcgrad.combine(g @ g.T, torch.zeros(3, dtype=torch.float64), [0, 1, 2])
    assert c.tolist() == [1.0, 1.0, 1.0]


def test_gram_form_equals_algorithm_1_on_explicit_vectors():
    """Several conflicting tasks, so the result depends on the order; same seeded orders."""
    g = torch.randn(5, 7, dtype=torch.float64)
    g[1] = -0.8 * g[0] + 0.3 * g[1]  # make conflicts certain
    g[3] = -g[2] + 0.5 * g[4]
    for seed in range(3):
        torch.manual_seed(seed)
        d = update(g)
        torch.manual_seed(seed)
        orders = random_orders(5)
        torch.testing.assert_close(d, algorithm_1(g, orders), rtol=1e-10, atol=1e-12)


def test_the_order_is_random_and_changes_the_result():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    results = set()
    for seed in range(20):
        torch.manual_seed(seed)
        results.add(tuple(round(x, 9) for x in update(g, tasks=["a", "b", "c"]).tolist()))
    assert len(results) > 1


def test_random_orders_are_uniform_permutations_of_the_other_tasks():
    counts: list[Counter[tuple[int, ...]]] = [Counter() for _ in range(4)]
    for _ in range(1200):
        orders = random_orders(4)
        assert orders.shape == (3, 4)
        for i in range(4):
            column = tuple(orders[:, i].tolist())
            assert sorted(column) == [j for j in range(4) if j != i]
            counts[i][column] += 1
    for count in counts:  # 3! = 6 orders, 200 expected each
        assert len(count) == 6 and all(120 < n < 280 for n in count.values())
    assert random_orders(1).shape == (0, 1)


def test_a_zero_gradient_gives_no_nan_and_no_projection():
    g = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    d = update(g, tasks=["a", "b", "c"])
    # the zero gradient neither projects nor is projected; b and c: b·c = 0 (no conflict)
    torch.testing.assert_close(d, g.sum(0))
    zeros = torch.zeros(3, 4, dtype=torch.float64)
    assert update(zeros, tasks=["a", "b", "c"]).tolist() == [0.0] * 4


def test_collinear_opposite_gradients_cancel():
    g = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)
    # each is projected onto the other's normal plane: both vanish
    torch.testing.assert_close(update(g, tasks=["a", "b"]), torch.zeros(2, dtype=torch.float64))


def test_one_task():
    pcgrad = PCGrad(["a"])
    gram = torch.tensor([[4.0]], dtype=torch.float64)
    assert pcgrad.combine(gram, torch.ones(1, dtype=torch.float64), [0]).tolist() == [1.0]


def test_a_subset_of_tasks():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(update(g, index=[1, 3]), torch.tensor([0.5, 1.5]).double())


def test_the_result_stays_in_the_cone_of_no_conflict_for_two_tasks():
    for a, b in itertools.product(range(3), range(3)):
        g = torch.randn(2, 5, dtype=torch.float64) * torch.tensor([[a + 0.1], [b + 0.1]])
        d = update(g, tasks=["a", "b"])
        assert (g @ d >= -1e-12).all()


@pytest.mark.parametrize("kwargs", [{"mode": "gradients"}, {"update_every": 0}])
def test_base_options_are_validated(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PCGrad(["a", "b"], **kwargs)
