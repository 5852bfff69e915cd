"""Per-pixel metrics on hand-computed values: ignored pixels, classes absent from a split,
invalid depths and normals, accumulation over batches (not a mean of batch means), and the
histogram median against the exact one."""

import math

import pytest
import torch

from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.eval.dense_metrics import DepthErrors, NormalErrors, Segmentation
from attnmtl.eval.metrics import HIGHER_IS_BETTER, TaskEvaluator, metric_names


def one_hot_logits(classes: torch.Tensor, c: int) -> torch.Tensor:
    """(N, H, W) classes → (N, C, H, W) logits whose argmax is that class."""
    return torch.nn.functional.one_hot(classes, c).permute(0, 3, 1, 2).float()


def test_miou_and_pixel_accuracy_by_hand_with_ignored_pixels_and_an_absent_class():
    metric = Segmentation(4)
    pred = torch.tensor([[[0, 0, 1, 1, 1]]])
    truth = torch.tensor([[[0, 1, 1, 1, -1]]])  # last pixel ignored; classes 2, 3 absent
    metric.update(one_hot_logits(pred, 4), truth)
    out = metric.compute()
    # class 0: inter 1, union 2 → ½; class 1: pred {2,3}, truth {1,2,3}: inter 2, union 3 → ⅔
    assert float(out["miou"]) == pytest.approx((0.5 + 2 / 3) / 2)
    assert float(out["pixel_acc"]) == pytest.approx(3 / 4)


def test_depth_errors_pool_every_valid_pixel_of_the_split():
    metric = DepthErrors()
    # batch 1: one valid pixel, error 1 on depth 2; batch 2: three valid pixels
    metric.update(torch.tensor([[[[3.0, 9.0]]]]), torch.tensor([[[[2.0, 0.0]]]]))
    metric.update(
        torch.tensor([[[[1.0, 1.0, 4.0, 5.0]]]]), torch.tensor([[[[1.0, 2.0, 4.0, math.nan]]]])
    )
    out = metric.compute()
    # errors 1, 0, 1, 0 over depths 2, 1, 2, 4 (pooled, not the mean of batch means 1 and ⅓)
    assert float(out["abs_err"]) == pytest.approx(2 / 4)
    assert float(out["rel_err"]) == pytest.approx((0.5 + 0 + 0.5 + 0) / 4)
    # ratios 1.5, 1, 2, 1 → two of four below 1.25
    assert float(out["delta1"]) == pytest.approx(2 / 4)


def test_normal_errors_by_hand_and_the_median_against_the_exact_one():
    metric = NormalErrors()
    angles = torch.tensor([0.0, 10.0, 20.0, 25.0, 40.0])  # degrees from +z, in the x-z plane
    rad = torch.deg2rad(angles)
    pred = torch.stack([rad.sin(), torch.zeros(5), rad.cos()])[None, :, None, :]  # (1, 3, 1, 5)
    truth = torch.zeros(1, 3, 1, 6)
    truth[0, 2] = 1.0
    truth[0, :, 0, 5] = 0.0  # an invalid pixel
    metric.update(torch.cat([pred, torch.ones(1, 3, 1, 1)], 3), truth)
    out = metric.compute()
    assert float(out["mean_angle"]) == pytest.approx(19.0, abs=1e-6)
    assert float(out["median_angle"]) == pytest.approx(20.0, abs=2e-3)
    assert float(out["within_11_25"]) == pytest.approx(2 / 5)
    assert float(out["within_22_5"]) == pytest.approx(3 / 5)
    assert float(out["within_30"]) == pytest.approx(4 / 5)
    # many random angles: the histogram's median agrees with torch's to a bin
    big = NormalErrors()
    g = torch.Generator().manual_seed(0)
    p = torch.nn.functional.normalize(torch.randn(2, 3, 16, 16, generator=g), dim=1)
    t = torch.nn.functional.normalize(torch.randn(2, 3, 16, 16, generator=g), dim=1)
    big.update(p, t)
    exact = torch.rad2deg(torch.acos((p * t).sum(1).clamp(-1, 1))).double().flatten()
    # torch's median is the lower middle of an even count: compare to the mean of the middle two
    middle = exact.sort().values[255:257].mean()
    assert float(big.compute()["median_angle"]) == pytest.approx(float(middle), abs=2e-3)


def test_evaluator_reports_each_dense_kind_with_directions():
    tasks = {
        "seg": Task("seg", "segmentation", 3),
        "depth": Task("depth", "depth"),
        "normals": Task("normals", "normals"),
        "edges": Task("edges", "binary_map"),
    }
    evaluator = TaskEvaluator(tasks)
    seg = torch.tensor([[[0, 1], [2, -1]]])
    preds = {
        "seg": one_hot_logits(seg.clamp_min(0), 3),
        "depth": torch.full((1, 1, 2, 2), 2.0),
        "normals": torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2),
        "edges": torch.tensor([[[[5.0, -5.0], [5.0, -5.0]]]]),
    }
    labels = {
        "seg": seg,
        "depth": torch.tensor([[[[2.0, 4.0], [0.0, 1.0]]]]),
        "normals": torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone(),
        "edges": torch.tensor([[[1.0, 0.0], [0.0, -1.0]]]),
    }
    mask = {t: torch.ones(1, dtype=torch.bool) for t in tasks}
    evaluator.update(MultiTaskOutput(preds, {}, None), labels, mask, [1, 1, 1, 1])
    out = evaluator.compute()
    assert out["seg"]["miou"] == pytest.approx(1.0) and out["seg"]["pixel_acc"] == 1.0
    assert out["depth"]["abs_err"] == pytest.approx((0 + 2 + 1) / 3)
    assert out["normals"]["mean_angle"] == pytest.approx(0.0, abs=1e-3)
    assert out["edges"]["accuracy"] == pytest.approx(2 / 3)
    for name, task in tasks.items():
        assert set(out[name]) == set(metric_names(task))
        assert task.primary_metric in out[name]
    assert not HIGHER_IS_BETTER["abs_err"] and HIGHER_IS_BETTER["miou"]
    assert not HIGHER_IS_BETTER["median_angle"] and HIGHER_IS_BETTER["within_30"]
