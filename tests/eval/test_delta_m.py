"""Δm against hand-computed values: directions, averaging within a task first, refusals."""

import pytest

from attnmtl.eval.delta_m import delta_m, per_task_delta

MULTI = {
    "digit": {"accuracy": 0.90, "f1": 0.88, "loss": 0.3},
    "scale": {"mae": 0.45, "rmse": 0.60, "r2": 0.5, "loss": 0.36},
    "large": {"accuracy": 0.95, "f1": 0.90, "auroc": 0.99, "loss": 0.1},
}
SINGLE = {
    "digit": {"accuracy": 0.80, "f1": 0.80, "loss": 0.5},
    "scale": {"mae": 0.50, "rmse": 0.50, "r2": 0.6, "loss": 0.25},
    "large": {"accuracy": 1.00, "f1": 1.00, "auroc": 0.99, "loss": 0.05},
}


def test_per_task_delta_by_hand():
    # digit: accuracy +0.10/0.80 = +12.5 %, f1 +0.08/0.80 = +10 %: mean +11.25 %
    # scale (lower is better): mae -(0.45-0.5)/0.5 = +10 %, rmse -(0.6-0.5)/0.5 = -20 %: -5 %
    # large: accuracy -5 %, f1 -10 %, auroc 0 %: -5 %; loss and r2 are left out
    deltas = per_task_delta(MULTI, SINGLE)
    assert deltas == pytest.approx({"digit": 11.25, "scale": -5.0, "large": -5.0})


def test_delta_m_averages_within_each_task_first():
    # (11.25 - 5 - 5) / 3; a flat mean over the 7 metrics would be -2.5 / 7
    assert delta_m(MULTI, SINGLE) == pytest.approx(1.25 / 3)


def test_a_model_equal_to_its_baselines_scores_zero_and_a_better_one_scores_positive():
    assert delta_m(SINGLE, SINGLE) == 0.0
    better = {t: dict(s) for t, s in SINGLE.items()}
    better["scale"]["mae"] = 0.25  # half the error: +50 % on one of scale's two metrics
    assert delta_m(better, SINGLE) == pytest.approx(25.0 / 3)


def test_chosen_metrics_and_a_negative_baseline():
    # r2 0.5 against 0.6: -16.7 %; a negative baseline -1.0 improved to -0.5 is +50 %, not -50 %
    assert delta_m(MULTI, SINGLE, {"scale": ["r2"]}) == pytest.approx(-100 / 6)
    multi, single = {"t": {"r2": -0.5}}, {"t": {"r2": -1.0}}
    assert delta_m(multi, single, {"t": ["r2"]}) == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("multi", "single", "metrics", "message"),
    [
        ({"t": {"mae": 1.0}}, {"t": {"mae": 0.0}}, None, r"task 't' metric 'mae'.*baseline is 0"),
        (MULTI, SINGLE, {"digit": ["speed"]}, r"metric 'speed' has no known direction"),
        (MULTI, SINGLE, {"digit": ["auroc"]}, r"task 'digit'.*no metric 'auroc'"),
        (MULTI, {"digit": SINGLE["digit"]}, None, r"the same tasks"),
        (MULTI, SINGLE, {"other": ["accuracy"]}, r"task 'other' has no multi-task scores"),
        ({"t": {"f1": float("nan")}}, {"t": {"f1": 0.5}}, None, r"expected finite values"),
        ({"t": {"loss": 1.0}}, {"t": {"loss": 2.0}}, None, r"task 't': no metric to compare"),
    ],
)
def test_refusals_name_the_task_and_metric(multi, single, metrics, message):
    with pytest.raises(ValueError, match=message):
        delta_m(multi, single, metrics)
