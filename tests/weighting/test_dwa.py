"""Dynamic weight average (Liu et al., CVPR 2019) on loss histories computed by hand (T = 2).

λ_k(t) = K exp(w_k/T) / Σ_i exp(w_i/T), w_k = L_k(t-1) / L_k(t-2), L_k the epoch-average loss.
"""

import json
import math

import pytest
import torch

from attnmtl.weighting import DynamicWeightAverage, StepContext


def step(weighting: DynamicWeightAverage, epoch: int, **values: float) -> dict[str, float]:
    losses = {t: torch.tensor(v, requires_grad=True) for t, v in values.items()}
    ctx = StepContext(shared_parameters=[], features=None, step=0, epoch=epoch)
    weights = weighting.backward(losses, ctx)
    for task, loss in losses.items():  # the gradient of Σ λ_k L_k w.r.t. L_k is λ_k
        assert loss.grad.item() == pytest.approx(weights[task].item())
    return {t: w.item() for t, w in weights.items()}


def two_task_history(weighting: DynamicWeightAverage) -> list[dict[str, float]]:
    """Epoch averages: a 3 → 1.5, b 1 → 0.75."""
    return [
        step(weighting, 0, a=2.0, b=1.0),
        step(weighting, 0, a=4.0, b=1.0),
        step(weighting, 1, a=1.5, b=1.0),
        step(weighting, 1, a=1.5, b=0.5),
    ]


def test_two_tasks_over_three_epochs():
    weighting = DynamicWeightAverage(["a", "b"])
    for weights in two_task_history(weighting):  # first two epochs: exactly 1
        assert weights == {"a": 1.0, "b": 1.0}
    # w = (1.5/3, 0.75/1) = (0.5, 0.75); λ_a = 2 / (1 + e^{(0.75-0.5)/2}) = 2 / (1 + e^0.125)
    first = step(weighting, 2, a=9.0, b=9.0)
    second = step(weighting, 2, a=0.1, b=5.0)
    assert first["a"] == pytest.approx(0.9375812533, abs=1e-6)
    assert first["b"] == pytest.approx(1.0624187467, abs=1e-6)
    assert first == second  # constant within an epoch
    assert first["a"] + first["b"] == pytest.approx(2.0)  # sums to K


def test_temperature_softens_the_weights():
    weighting = DynamicWeightAverage(["a", "b"], temperature=0.25)
    two_task_history(weighting)
    # λ_a = 2 / (1 + e^{0.25/0.25}) = 2 / (1 + e)
    assert step(weighting, 2, a=1.0, b=1.0)["a"] == pytest.approx(2 / (1 + math.e), abs=1e-6)


def test_a_task_missing_from_batches_and_from_a_whole_epoch():
    weighting = DynamicWeightAverage(["a", "b", "c"])
    # epoch 0: c only in the first batch, averaged over that batch alone (3, not 1.5)
    step(weighting, 0, a=2.0, b=1.0, c=3.0)
    step(weighting, 0, a=4.0, b=1.0)
    step(weighting, 1, a=1.5, b=1.0, c=1.0)
    step(weighting, 1, a=1.5, b=0.5, c=2.0)
    # epoch 2: w = (1.5/3, 0.75/1, 1.5/3) = (0.5, 0.75, 0.5); c is absent all epoch
    weights = step(weighting, 2, a=0.75, b=0.75)
    assert set(weights) == {"a", "b"}
    assert weights["a"] == pytest.approx(0.9575033054, abs=1e-6)
    assert weights["b"] == pytest.approx(1.0849933893, abs=1e-6)
    assert weighting.loss_count.tolist() == [1.0, 1.0, 0.0]  # c's accumulators untouched
    # epoch 3: w_a = 0.75/1.5, w_b = 0.75/0.75; c keeps its last defined ratio 1.5/3
    weights = step(weighting, 3, a=1.0, b=1.0, c=0.75)
    assert weights["a"] == pytest.approx(0.9135130273, abs=1e-6)
    assert weights["b"] == pytest.approx(1.1729739455, abs=1e-6)
    assert weights["c"] == pytest.approx(0.9135130273, abs=1e-6)
    assert weighting.lambdas.sum().item() == pytest.approx(3.0)
    # epoch 4: w_a = w_b = 1/0.75; c's history skipped epoch 2, so w_c = 0.75 / 1.5 (epochs 3, 1)
    step(weighting, 4, a=1.0, b=1.0)
    ratios = torch.tensor([1.0 / 0.75, 1.0 / 0.75, 0.75 / 1.5])
    torch.testing.assert_close(weighting.lambdas, 3 * torch.softmax(ratios / 2, dim=0))


def test_a_task_with_one_epoch_of_history_takes_the_neutral_ratio():
    weighting = DynamicWeightAverage(["a", "b"])
    step(weighting, 0, a=1.0)
    step(weighting, 1, a=0.5, b=2.0)
    # w_a = 0.5, b has a single epoch average: w_b = 1
    weights = step(weighting, 2, a=1.0, b=1.0)
    assert weights["a"] == pytest.approx(2 / (1 + math.exp(0.25)), abs=1e-6)


def test_epoch_state_round_trips_through_json():
    weighting = DynamicWeightAverage(["a", "b"])
    step(weighting, 0, a=2.0, b=1.0)
    step(weighting, 1, a=1.0, b=1.0)
    restored = DynamicWeightAverage(["a", "b"])
    restored.load_state_dict(weighting.state_dict())
    restored.load_extra_state(json.loads(json.dumps(weighting.extra_state())))
    assert restored.epoch == 1
    # the same epoch continues: no new epoch is started on the restored strategy
    step(weighting, 1, a=0.5, b=1.0)
    step(restored, 1, a=0.5, b=1.0)
    assert step(weighting, 2, a=1.0, b=1.0) == step(restored, 2, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="epoch='x'"):
        restored.load_extra_state({"epoch": "x"})


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="temperature="):
        DynamicWeightAverage(["a", "b"], temperature=temperature)
