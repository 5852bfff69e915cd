"""The masked multi-task objective: unlabelled cells never reach a loss."""

import torch

from attnmtl.core import task_losses
from attnmtl.core.tasks import Task
from attnmtl.data import Batch
from attnmtl.models import MultiTaskOutput

TASKS = {"c": Task("c", "multiclass", 3), "r": Task("r", "regression")}


def test_loss_is_the_mean_over_labelled_samples_only():
    preds = {"c": torch.randn(4, 3, requires_grad=True), "r": torch.randn(4, 1, requires_grad=True)}
    labels = {"c": torch.tensor([0, 99, 2, -7]), "r": torch.tensor([1.0, float("nan"), 2.0, 0.0])}
    mask = {
        "c": torch.tensor([True, False, True, False]),
        "r": torch.tensor([True, False, True, True]),
    }
    losses = task_losses(MultiTaskOutput(preds, {}), Batch(None, labels, mask), TASKS)
    expected_c = torch.nn.functional.cross_entropy(preds["c"][[0, 2]], labels["c"][[0, 2]])
    expected_r = ((preds["r"][[0, 2, 3], 0] - labels["r"][[0, 2, 3]]) ** 2).mean()
    assert torch.allclose(losses["c"], expected_c)
    assert torch.allclose(losses["r"], expected_r)
    sum(losses.values()).backward()
    assert torch.all(preds["c"].grad[[1, 3]] == 0)  # unlabelled rows get no gradient
    assert torch.isfinite(preds["r"].grad).all()
    assert torch.all(preds["r"].grad[1] == 0)


def test_a_task_without_labelled_samples_is_absent_not_zero_or_nan():
    preds = {"c": torch.randn(2, 3, requires_grad=True), "r": torch.randn(2, 1, requires_grad=True)}
    labels = {"c": torch.tensor([1, 2]), "r": torch.full((2,), float("nan"))}
    mask = {"c": torch.ones(2, dtype=torch.bool), "r": torch.zeros(2, dtype=torch.bool)}
    losses = task_losses(MultiTaskOutput(preds, {}), Batch(None, labels, mask), TASKS)
    assert set(losses) == {"c"}
    losses["c"].backward()
    assert preds["r"].grad is None
