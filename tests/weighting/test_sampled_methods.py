"""MoDo and SDMGrad: three independent estimates from disjoint parts of the batch, checked step
by step against torchjd's MoDoWeighting / SDMGradWeighting (oracles only), and part_losses."""

import pytest
import torch
from torch import nn
from torchjd.aggregation import MoDoWeighting, SDMGradWeighting

from attnmtl.core.batch import Batch
from attnmtl.core.losses import part_losses, task_losses
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext

TASKS = ["a", "b", "c"]


class PerSample(nn.Module):
    """Per-sample losses ℓ_{n,k} = A_{n,k}·θ + 10: the gradient of a part's mean loss is the
    mean of its rows of A, exactly."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    def context(self, A: torch.Tensor, step: int = 0):
        per_sample = A @ self.theta + 10.0  # (N, K)
        losses = {t: per_sample[:, k].mean() for k, t in enumerate(TASKS)}

        def parts(n):
            return [{t: per_sample[i::n, k].mean() for k, t in enumerate(TASKS)} for i in range(n)]

        ctx = StepContext([self.theta], None, step, 0, task_parameters={t: [] for t in TASKS})
        ctx.parts = parts
        return losses, ctx


def estimates(A: torch.Tensor) -> list[torch.Tensor]:
    """G_i (K, P) of the three parts (samples i, i+3, ...)."""
    return [A[i::3].mean(0) for i in range(3)]


def draws(steps: int, n: int = 12, dim: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, dim, dtype=torch.float64, generator=g) for _ in range(steps)]


def test_modo_agrees_with_torchjd_step_by_step():
    ours = create_weighting("modo", TASKS, gamma=0.05, rho=0.1)
    oracle = MoDoWeighting(gamma=0.05, rho=0.1)
    model = PerSample(5)
    for k, A in enumerate(draws(4)):
        model.theta.grad = None
        weights = ours.backward(*model.context(A, k))
        first, second, third = estimates(A)
        lam = oracle(first @ second.T)
        torch.testing.assert_close(torch.stack(list(weights.values())), lam)
        torch.testing.assert_close(model.theta.grad, lam @ third)


def test_sdmgrad_agrees_with_torchjd_step_by_step():
    ours = create_weighting("sdmgrad", TASKS, lamda=0.3, niter=20)
    oracle = SDMGradWeighting(lr=5.0, momentum=0.5, n_iter=20, lambda_=0.3)
    model = PerSample(5)
    for k, A in enumerate(draws(4, seed=1)):
        model.theta.grad = None
        weights = ours.backward(*model.context(A, k))
        zeta, xi1, xi2 = estimates(A)
        c = oracle(xi1 @ xi2.T)
        torch.testing.assert_close(torch.stack(list(weights.values())), c)
        torch.testing.assert_close(model.theta.grad, c @ zeta)


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_without_the_parts_of_the_batch_it_says_how_to_get_them(name):
    model = PerSample(5)
    losses, ctx = model.context(draws(1)[0])
    ctx.parts = None
    with pytest.raises(ValueError, match=r"needs the losses of disjoint parts of the batch"):
        create_weighting(name, TASKS).backward(losses, ctx)


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"mode": "features"}, "parameters mode only"),
        ({"engine": "gramian"}, "use batched or loop"),
    ],
)
def test_modes_and_engines_they_cannot_take(name, option, match):
    with pytest.raises(ValueError, match=match):
        create_weighting(name, TASKS, **option)


def test_part_losses_are_the_task_losses_of_each_part():
    tasks = {"m": Task("m", "multiclass", 3), "r": Task("r", "regression")}
    torch.manual_seed(0)
    preds = {"m": torch.randn(7, 3), "r": torch.randn(7, 1)}
    labels = {"m": torch.randint(0, 3, (7,)), "r": torch.randn(7)}
    mask = {
        "m": torch.tensor([1, 1, 0, 1, 1, 1, 1]).bool(),
        "r": torch.tensor([1, 0, 0, 1, 0, 0, 1]).bool(),
    }
    batch = Batch(torch.zeros(7, 2), labels, mask)
    parts = part_losses(MultiTaskOutput(preds, {}, None), batch, tasks, 3)
    assert [sorted(p) for p in parts] == [["m", "r"], ["m"], ["m"]]  # r: rows 0, 3, 6 only
    for i, part in enumerate(parts):
        rows = torch.arange(7)[i::3]
        sub = Batch(
            torch.zeros(len(rows), 2),
            {t: v[rows] for t, v in labels.items()},
            {t: v[rows] for t, v in mask.items()},
        )
        want = task_losses(
            MultiTaskOutput({t: v[rows] for t, v in preds.items()}, {}, None), sub, tasks
        )
        assert part.keys() == want.keys()
        for t in part:
            torch.testing.assert_close(part[t], want[t])
    with pytest.raises(ValueError, match="cannot be split into 8 parts"):
        part_losses(MultiTaskOutput(preds, {}, None), batch, tasks, 8)


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_an_amp_overflow_step_leaves_the_weights_alone(name):
    """GradScaler skips a step whose gradients overflowed; the method must not choke on it."""
    model = PerSample(5)
    weighting = create_weighting(name, TASKS)
    losses, ctx = model.context(draws(1)[0])
    ctx.scale = lambda t: t * float("inf")
    before = [b.clone() for b in weighting.buffers()]
    weights = weighting.backward(losses, ctx)
    assert all(float(w) == 1.0 for w in weights.values())
    assert all(torch.equal(a, b) for a, b in zip(before, weighting.buffers(), strict=True))


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_a_forward_pass_per_part_gives_the_same_update(name):
    """StepContext.part_forward (a graph per part, cheaper backward passes) and parts (slices of
    the one forward pass) are the same estimates."""
    A = draws(1, seed=3)[0]
    updates = []
    for separate in (False, True):
        model = PerSample(5)
        losses, ctx = model.context(A)
        if separate:
            ctx.part_forward = lambda n, theta=model.theta: [
                {t: (A[i::n, k] @ theta + 10.0).mean() for k, t in enumerate(TASKS)}
                for i in range(n)
            ]
            ctx.parts = None
        create_weighting(name, TASKS).backward(losses, ctx)
        updates.append(model.theta.grad.clone())
    torch.testing.assert_close(updates[1], updates[0])
