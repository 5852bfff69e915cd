"""Per-pixel task kinds: losses over valid pixels on hand-computed values, the two levels of
missing labels, empty batches, label checks."""

import math

import pytest
import torch

from attnmtl.core.batch import Batch
from attnmtl.core.losses import part_losses, task_losses
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task

NAN = float("nan")


def test_segmentation_loss_is_cross_entropy_over_labelled_pixels():
    task = Task("seg", "segmentation", 2)
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 0] = math.log(3.0)  # pixel 0: p(class 1) = 3/4
    target = torch.tensor([[[1, 0, -1]]])
    # pixel 0: −log 3/4; pixel 1: −log 1/2; pixel 2 ignored
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert float(task.compute_loss(logits, target)) == pytest.approx(expected)


def test_depth_loss_is_l1_over_valid_pixels_and_nan_never_reaches_the_gradient():
    task = Task("d", "depth")
    pred = torch.tensor([[[[1.0, 2.0, 5.0, 7.0]]]], requires_grad=True)
    target = torch.tensor([[[[2.0, 0.0, NAN, 4.0]]]])  # pixels 1 (0) and 2 (NaN) invalid
    loss = task.compute_loss(pred, target)
    assert float(loss.detach()) == pytest.approx((1.0 + 3.0) / 2)
    loss.backward()
    assert pred.grad.tolist() == [[[[-0.5, 0.0, 0.0, 0.5]]]]


def test_normals_loss_is_one_minus_cosine_of_the_normalised_prediction():
    task = Task("n", "normals")
    assert task.size == 3
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, :, 0, 0] = torch.tensor([2.0, 0.0, 0.0])  # normalised to x: cos 1 with x
    pred[0, :, 0, 1] = torch.tensor([1.0, 1.0, 0.0])  # cos 45° with x
    pred[0, :, 0, 2] = torch.tensor([0.0, 0.0, 1.0])
    target = torch.zeros(1, 3, 1, 3)
    target[0, 0, 0, :2] = 1.0  # pixel 2: all-zero, invalid
    expected = ((1 - 1) + (1 - math.cos(math.pi / 4))) / 2
    assert float(task.compute_loss(pred, target)) == pytest.approx(expected)


def test_binary_map_loss_is_bce_over_labelled_pixels():
    task = Task("e", "binary_map")
    pred = torch.tensor([[[[0.0, 2.0, -1.0]]]])
    target = torch.tensor([[[1.0, 0.0, -1.0]]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert float(task.compute_loss(pred, target)) == pytest.approx(expected)


def _batch(depth_labels: torch.Tensor, mask: list[bool]) -> tuple[MultiTaskOutput, Batch, dict]:
    tasks = {"d": Task("d", "depth"), "s": Task("s", "segmentation", 3)}
    n = depth_labels.shape[0]
    seg = torch.zeros(n, 2, 2, dtype=torch.long)
    out = MultiTaskOutput(
        {"d": torch.ones(n, 1, 2, 2, requires_grad=True), "s": torch.zeros(n, 3, 2, 2)}, {}, None
    )
    batch = Batch(
        torch.zeros(n, 3, 2, 2),
        {"d": depth_labels, "s": seg},
        {"d": torch.tensor(mask), "s": torch.ones(n, dtype=torch.bool)},
    )
    return out, batch, tasks


def test_two_levels_of_missing_labels_hold_together():
    """Sample 0 is not labelled for depth (its pixels never count); sample 1 has one valid
    pixel; the loss is over that pixel only."""
    labels = torch.full((2, 1, 2, 2), 0.0)
    labels[0] = 100.0  # unlabelled sample: its values must not count
    labels[1, 0, 0, 0] = 3.0
    out, batch, tasks = _batch(labels, [False, True])
    losses = task_losses(out, batch, tasks)
    assert float(losses["d"].detach()) == pytest.approx(2.0)  # |1 − 3|


def test_a_batch_without_any_valid_pixel_adds_nothing():
    labels = torch.zeros(2, 1, 2, 2)  # labelled samples, but every depth invalid
    out, batch, tasks = _batch(labels, [True, True])
    losses = task_losses(out, batch, tasks)
    assert "d" not in losses and "s" in losses
    parts = part_losses(out, batch, tasks, 2)
    assert all("d" not in p for p in parts)


def test_bad_dense_labels_are_named():
    seg = Task("seg", "segmentation", 3)
    with pytest.raises(ValueError, match=r"pixel labels \[5\]; expected classes in \[0, 2\] or -1"):
        seg.check_labels(torch.tensor([[[0, 5], [-1, 2]]]))
    with pytest.raises(ValueError, match=r"labels have shape \(2, 3\); expected \(N, H, W\)"):
        seg.check_labels(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected \(N, 1, H, W\)"):
        Task("d", "depth").check_labels(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="negative depths"):
        Task("d", "depth").check_labels(-torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="must be 0, 1 or -1"):
        Task("e", "binary_map").check_labels(torch.full((1, 2, 2), 0.5))
    with pytest.raises(ValueError, match="a depth task has size 1, got 2"):
        Task("d", "depth", 2)
    with pytest.raises(ValueError, match="a segmentation task needs >= 2 classes"):
        Task("s", "segmentation", 1)
    # unlabelled samples are never read: a bad value there is fine
    seg.check_labels(torch.tensor([[[0, 1]], [[9, 9]]]), torch.tensor([True, False]))
