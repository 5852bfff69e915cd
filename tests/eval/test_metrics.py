"""Per-task metrics: hand-computed values, logits read as logits, unlabelled rows ignored,
undefined values NaN without warnings."""

import math
import warnings

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.eval.metrics import HIGHER_IS_BETTER, TaskEvaluator, metric_names
from attnmtl.models import MultiTaskOutput


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


# ------------------------------------------------------------------ AUROC, R², directions

ALL = torch.ones(4, dtype=torch.bool)


def test_binary_auroc_is_the_fraction_of_correctly_ordered_pairs():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4)
    # are ordered, (0.35 < 0.4) is not: 3 of 4 pairs
    pred = torch.tensor([[0.1], [0.4], [0.35], [0.8]])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    result = _compute(Task("b", "binary"), pred, labels, ALL)
    assert result["auroc"] == pytest.approx(0.75)


def test_auroc_keeps_the_order_of_confident_logits():
    # float32 sigmoid rounds all four to 1.0 (a tie: AUROC 0.5); the order is perfect
    pred = torch.tensor([[20.0], [25.0], [30.0], [40.0]])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert _compute(Task("b", "binary"), pred, labels, ALL)["auroc"] == pytest.approx(1.0)


def test_multilabel_auroc_is_the_macro_mean_over_labels_with_both_classes():
    # label 0: 0.75 (the pairs above); label 1: positives 3, 2 above negatives 1, 0: 1.0;
    # label 2 is never positive: undefined, left out of the mean
    pred = torch.tensor([[0.1, 3.0, 0.0], [0.4, 1.0, 1.0], [0.35, 2.0, 2.0], [0.8, 0.0, 3.0]])
    labels = torch.tensor([[0.0, 1, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0]])
    result = _compute(Task("m", "multilabel", 3), pred, labels, ALL)
    assert result["auroc"] == pytest.approx((0.75 + 1.0) / 2)


def test_auroc_of_one_class_only_is_nan_without_warnings():
    pred = torch.tensor([[0.1], [0.4], [0.35], [0.8]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binary = _compute(Task("b", "binary"), pred, torch.ones(4), ALL)
        multi = _compute(Task("m", "multilabel", 2), pred.repeat(1, 2), torch.zeros(4, 2), ALL)
    assert math.isnan(binary["auroc"])
    assert math.isnan(multi["auroc"])
    assert binary["accuracy"] == pytest.approx(1.0)  # the other metrics are unaffected


def test_r2_is_one_minus_residual_over_total_sum_of_squares():
    # targets 1, 2, 3, 4 (mean 2.5): SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5
    # predictions 1.5, 2, 2.5, 4: SS_res = 0.25 + 0 + 0.25 + 0 = 0.5; R² = 1 - 0.5 / 5 = 0.9
    pred = torch.tensor([[1.5], [2.0], [2.5], [4.0]])
    labels = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert _compute(Task("r", "regression"), pred, labels, ALL)["r2"] == pytest.approx(0.9)
    # a worse-than-the-mean predictor is negative: 1 - (1 + 4 + 1 + 4) / 5 = -1
    bad = torch.tensor([[2.0], [0.0], [4.0], [2.0]])
    assert _compute(Task("r", "regression"), bad, labels, ALL)["r2"] == pytest.approx(-1.0)


def test_r2_of_several_outputs_is_their_mean_and_accumulates_over_batches():
    # output 0 as above (0.9); output 1: targets 0, 0, 2, 2 (SS_tot 4), predictions 0, 1, 1, 2
    # (SS_res 2): 0.5
    task = Task("r", "regression", 2)
    pred = torch.tensor([[1.5, 0.0], [2.0, 1.0], [2.5, 1.0], [4.0, 2.0]])
    labels = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 2.0], [4.0, 2.0]])
    evaluator = TaskEvaluator({"r": task})
    for rows in (slice(0, 2), slice(2, 4)):  # two batches, one result
        output = MultiTaskOutput({"r": pred[rows]}, {})
        evaluator.update(output, {"r": labels[rows]}, {"r": ALL[rows]}, [2])
    assert evaluator.compute()["r"]["r2"] == pytest.approx((0.9 + 0.5) / 2)


def test_r2_below_two_samples_or_of_a_constant_target_is_nan_without_warnings():
    task = Task("r", "regression")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = _compute(task, torch.tensor([[1.0]]), torch.tensor([2.0]), torch.tensor([True]))
        constant = _compute(task, torch.tensor([[1.0], [3.0]]), torch.full((2,), 0.7), ALL[:2])
    assert math.isnan(one["r2"])
    assert one["mae"] == pytest.approx(1.0)
    assert math.isnan(constant["r2"])


@pytest.mark.parametrize(
    ("task", "names"),
    [
        (Task("c", "multiclass", 3), {"accuracy", "f1", "loss"}),
        (Task("b", "binary"), {"accuracy", "f1", "f1_pos", "auroc", "loss"}),
        (Task("m", "multilabel", 3), {"accuracy", "f1", "auroc", "loss"}),
        (Task("r", "regression"), {"mae", "rmse", "r2", "loss"}),
    ],
)
def test_every_reported_metric_is_named_and_has_a_direction(task, names):
    assert set(metric_names(task)) == names
    assert names <= set(HIGHER_IS_BETTER)
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(8, task.out_dim, generator=gen)
    if task.kind == "multiclass":
        labels = torch.arange(8) % task.size
    elif task.kind == "regression":
        labels = torch.randn(8, generator=gen)
    else:
        labels = (torch.arange(8 * task.size).reshape(8, task.size).squeeze(-1) % 2).float()
    result = _compute(task, pred, labels, torch.ones(8, dtype=torch.bool))
    assert set(result) == names


def test_directions():
    up = ["accuracy", "f1", "f1_pos", "auroc", "r2"]
    up += ["miou", "pixel_acc", "delta1", "within_11_25", "within_22_5", "within_30"]
    assert [m for m, higher in HIGHER_IS_BETTER.items() if higher] == up
    down = ["mae", "rmse", "loss", "abs_err", "rel_err", "mean_angle", "median_angle"]
    assert [m for m, up in HIGHER_IS_BETTER.items() if not up] == down


def test_binary_f1_is_macro_over_both_classes_and_f1_pos_the_positive_class():
    """Predicting class 1 for all 100 samples, 51 of them positive: class 1's F1 is
    2·51 / (51 + 100) = 0.6755, class 0's is 0, so the macro F1 is 0.3377."""
    labels = torch.tensor([1.0] * 51 + [0.0] * 49)
    result = _compute(Task("b", "binary"), torch.full((100, 1), 3.0), labels, torch.ones(100) > 0)
    assert result["f1_pos"] == pytest.approx(102 / 151)
    assert result["f1"] == pytest.approx(102 / 151 / 2)
    # a perfect prediction: both are 1; one error in each class, by hand
    pred = torch.tensor([[5.0], [5.0], [-5.0], [5.0], [-5.0], [-5.0]])
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    result = _compute(Task("b", "binary"), pred, labels, torch.ones(6) > 0)
    # class 1: tp 2, fp 1, fn 1 -> 2/3; class 0 likewise -> 2/3
    assert result["f1"] == pytest.approx(2 / 3) and result["f1_pos"] == pytest.approx(2 / 3)


def test_regression_metrics_are_in_natural_units_given_the_target_standardisation():
    """Targets standardised by mean 10, std 2: MAE and RMSE are 2x those in standard units,
    R² is unchanged, and the loss stays the one training minimises (standard units)."""

    task = Task("r", "regression")
    pred = torch.tensor([[0.5], [-1.0], [2.0], [0.0]])  # standard units
    target = torch.tensor([0.0, -1.5, 1.0, 0.5])
    plain = _compute(task, pred, target, ALL)
    evaluator = TaskEvaluator({"r": task}, {"r": (torch.tensor([10.0]), torch.tensor([2.0]))})
    output = MultiTaskOutput({"r": pred}, {})
    evaluator.update(output, {"r": target}, {"r": ALL}, [4])
    natural = evaluator.compute()["r"]
    assert natural["mae"] == pytest.approx(2 * plain["mae"])  # |Δ| = 0.5, 0.5, 1, 0.5 -> 0.625
    assert plain["mae"] == pytest.approx(0.625)
    assert natural["rmse"] == pytest.approx(2 * plain["rmse"])
    assert natural["r2"] == pytest.approx(plain["r2"])
    assert natural["loss"] == pytest.approx(plain["loss"])
