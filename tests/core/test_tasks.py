"""Task specs: losses against their formulas, label checks, predictions."""

import math

import pytest
import torch

from attnmtl.core.tasks import Task


def test_multiclass_loss_is_cross_entropy_by_hand():
    task = Task("digit", "multiclass", 3)
    logits = torch.tensor([[1.0, 2.0, 0.0]])
    expected = -math.log(math.exp(2.0) / (math.exp(1.0) + math.exp(2.0) + 1.0))
    assert task.compute_loss(logits, torch.tensor([1])).item() == pytest.approx(expected)


def test_binary_loss_is_bce_with_logits_by_hand():
    task = Task("large", "binary")
    logit, label = 0.5, 1.0
    expected = -math.log(1 / (1 + math.exp(-logit)))
    assert task.compute_loss(torch.tensor([[logit]]), torch.tensor([label])).item() == (
        pytest.approx(expected)
    )


def test_multilabel_loss_averages_labels():
    task = Task("tags", "multilabel", 2)
    logits = torch.tensor([[0.0, 0.0]])
    assert task.compute_loss(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(
        math.log(2.0)
    )


@pytest.mark.parametrize(("loss", "expected"), [("mse", 4.0), ("l1", 2.0), ("huber", 1.5)])
def test_regression_losses(loss, expected):
    task = Task("scale", "regression", loss=loss)
    assert task.compute_loss(torch.tensor([[3.0]]), torch.tensor([1.0])).item() == expected


def test_predictions_in_label_space():
    assert Task("d", "multiclass", 3).predict(torch.tensor([[0.0, 3.0, 1.0]])).tolist() == [1]
    assert Task("b", "binary").predict(torch.tensor([[-0.1], [0.2]])).tolist() == [0, 1]
    assert Task("r", "regression").predict(torch.tensor([[0.5]])).tolist() == [0.5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x", "kind": "ordinal"}, "kind='ordinal'"),
        ({"name": "x", "kind": "multiclass", "size": 1}, "size=1"),
        ({"name": "x", "kind": "binary", "size": 2}, "size 1"),
        ({"name": "x y", "kind": "binary"}, "task name"),
        ({"name": "x", "kind": "binary", "loss": "l1"}, "regression only"),
        ({"name": "x", "kind": "regression", "loss": "cauchy"}, "loss='cauchy'"),
    ],
)
def test_bad_task_specs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Task(**kwargs)


def test_label_checks_only_read_labelled_entries():
    task = Task("digit", "multiclass", 10)
    labels = torch.tensor([3, -1, 12])
    with pytest.raises(ValueError, match=r"lie in \[-1, 12\]"):
        task.check_labels(labels)
    task.check_labels(labels, torch.tensor([True, False, False]))
    regression = Task("scale", "regression")
    with pytest.raises(ValueError, match="NaN"):
        regression.check_labels(torch.tensor([1.0, float("nan")]))
    regression.check_labels(torch.tensor([1.0, float("nan")]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="0 or 1"):
        Task("b", "binary").check_labels(torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        Task("m", "multilabel", 3).check_labels(torch.zeros(4))
