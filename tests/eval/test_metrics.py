"""Per-task metrics: hand-computed values, logits read as logits, unlabelled rows ignored."""

import pytest
import torch

from attnmtl.eval.metrics import TaskEvaluator
from attnmtl.models import MultiTaskOutput
from attnmtl.tasks import Task


def _compute(task, pred, labels, mask):
    evaluator = TaskEvaluator({task.name: task})
    output = MultiTaskOutput({task.name: pred}, {})
    evaluator.update(output, {task.name: labels}, {task.name: mask}, [int(mask.sum())])
    return evaluator.compute()[task.name]


def test_binary_logits_inside_zero_one_are_still_logits():
    # logits 0.2, 0.4, 0.1, 0.3 are all > 0: every prediction is 1, so accuracy is 3/4
    pred = torch.tensor([[0.2], [0.4], [0.1], [0.3]])
    labels = torch.tensor([1.0, 1.0, 0.0, 1.0])
    result = _compute(Task("b", "binary"), pred, labels, torch.ones(4, dtype=torch.bool))
    assert result["accuracy"] == pytest.approx(0.75)


def test_multilabel_logits_are_thresholded_at_zero():
    pred = torch.tensor([[0.3, -0.2], [0.1, 0.9]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    result = _compute(Task("m", "multilabel", 2), pred, labels, torch.ones(2, dtype=torch.bool))
    assert result["accuracy"] == pytest.approx(0.75)


def test_only_labelled_rows_enter_the_metrics():
    pred = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, -5])  # row 2 unlabelled, its filler out of range
    mask = torch.tensor([True, True, False])
    result = _compute(Task("c", "multiclass", 2), pred, labels, mask)
    assert result["accuracy"] == pytest.approx(0.5)


def test_regression_mae_and_rmse_by_hand():
    pred = torch.tensor([[1.0], [3.0], [100.0]])
    labels = torch.tensor([2.0, 1.0, float("nan")])
    result = _compute(Task("r", "regression"), pred, labels, torch.tensor([True, True, False]))
    assert result["mae"] == pytest.approx(1.5)
    assert result["rmse"] == pytest.approx((2.5) ** 0.5)
    assert result["loss"] == pytest.approx(2.5)
