"""STCH (Lin et al. 2024) and IMTL-L on its own (Liu et al. 2021), on hand-computed losses."""

import math

import pytest
import torch

from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext


def leaves(values: dict[str, float]) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(v, dtype=torch.float64, requires_grad=True) for t, v in values.items()}


def backward(weighting, values: dict[str, float], epoch: int):
    losses = leaves(values)
    weights = weighting.backward(losses, StepContext([], None, 0, epoch))
    return {t: float(losses[t].grad) for t in losses}, {t: float(w) for t, w in weights.items()}


def test_stch_warms_up_on_log_losses_then_scalarises_against_the_nadir():
    stch = create_weighting("stch", ["a", "b"], mu=0.5, warmup_epochs=2)
    grads, weights = backward(stch, {"a": 2.0, "b": 4.0}, epoch=0)
    assert grads == pytest.approx({"a": 0.5, "b": 0.25}) and weights == grads  # Σ log L
    backward(stch, {"a": 1.0, "b": 8.0}, epoch=1)  # the last warm-up epoch: its mean is z
    backward(stch, {"a": 3.0, "b": 4.0}, epoch=1)
    assert stch.loss_sums.tolist() == [4.0, 12.0]
    la, lb = 3.0, 3.0
    grads, weights = backward(stch, {"a": la, "b": lb}, epoch=2)
    z = {"a": 2.0, "b": 6.0}
    f = {t: math.log(v / z[t]) / 0.5 for t, v in {"a": la, "b": lb}.items()}
    soft = {t: math.exp(f[t]) / (math.exp(f["a"]) + math.exp(f["b"])) for t in f}
    # L = 2 μ log Σ exp(f_k): ∂L/∂L_k = 2 softmax_k / L_k
    expected = {t: 2 * soft[t] / 3.0 for t in f}
    assert grads == pytest.approx(expected) and weights == pytest.approx(expected)
    assert stch.nadir.tolist() == [2.0, 6.0] and bool(stch.ready)


def test_stch_small_mu_follows_the_worst_normalised_task():
    stch = create_weighting("stch", ["a", "b", "c"], mu=1e-3, warmup_epochs=0)
    grads, _ = backward(stch, {"a": 1.0, "b": 5.0, "c": 2.0}, epoch=0)
    # z = 1: the largest log loss is b's; almost all of K·softmax goes to it
    assert grads["b"] == pytest.approx(3 / 5.0, rel=1e-6) and grads["a"] < 1e-12


def test_stch_task_unseen_in_the_nadir_epoch_gets_one():
    stch = create_weighting("stch", ["a", "b"], warmup_epochs=1)
    backward(stch, {"a": 4.0}, epoch=0)
    backward(stch, {"a": 2.0, "b": 5.0}, epoch=1)
    assert stch.nadir.tolist() == [4.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mu": 0.0}, r"mu=0.0; expected a finite number > 0"),
        ({"warmup_epochs": -1}, r"warmup_epochs=-1; expected an integer >= 0"),
    ],
)
def test_stch_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_weighting("stch", ["a", "b"], **kwargs)


def test_imtl_l_gradients_are_the_papers():
    imtl_l = create_weighting("imtl_l", ["a", "b"])
    with torch.no_grad():
        imtl_l.log_scales[0].fill_(math.log(2.0))
    grads, weights = backward(imtl_l, {"a": 3.0, "b": 0.5}, epoch=0)
    assert grads == pytest.approx({"a": 2.0, "b": 1.0}) and weights == grads  # e^{s_t}
    # ∂(e^s L − s)/∂s = e^s L − 1
    assert float(imtl_l.log_scales[0].grad) == pytest.approx(2.0 * 3.0 - 1)
    assert float(imtl_l.log_scales[1].grad) == pytest.approx(0.5 - 1)


def test_imtl_l_is_imtl_with_variant_l():
    alone = create_weighting("imtl_l", ["a", "b"])
    variant = create_weighting("imtl", ["a", "b"], variant="l")
    for values in ({"a": 3.0, "b": 0.5}, {"a": 0.2, "b": 7.0}):
        first, second = backward(alone, values, 0), backward(variant, values, 0)
        assert first == second
        assert [p.grad for p in alone.parameters()] == [p.grad for p in variant.parameters()]
