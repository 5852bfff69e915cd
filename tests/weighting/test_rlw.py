"""Random loss weighting (Lin et al., TMLR 2022): softmax of standard-normal draws each step."""

import torch

from attnmtl.weighting import RandomLossWeighting, StepContext

CTX = StepContext(shared_parameters=[], features=None, step=0, epoch=0)


def leaves(**values: float) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(v, requires_grad=True) for t, v in values.items()}


def test_weights_are_a_softmax_of_normal_draws_and_the_gradient_uses_them():
    losses = leaves(x=2.0, y=3.0, z=4.0)
    torch.manual_seed(7)
    weights = RandomLossWeighting(["x", "y", "z"]).backward(losses, CTX)
    torch.manual_seed(7)
    expected = torch.softmax(torch.randn(3), dim=0)
    got = torch.stack([weights[t] for t in "xyz"])
    torch.testing.assert_close(got, expected)
    assert abs(got.sum().item() - 1.0) < 1e-6
    assert (got > 0).all()
    # d(Σ w_k L_k)/dL_k = w_k
    torch.testing.assert_close(torch.stack([losses[t].grad for t in "xyz"]), expected)


def test_reproducible_with_a_seed_and_fresh_each_step():
    weighting = RandomLossWeighting(["x", "y"])
    torch.manual_seed(3)
    first = weighting.backward(leaves(x=1.0, y=1.0), CTX)
    second = weighting.backward(leaves(x=1.0, y=1.0), CTX)
    torch.manual_seed(3)
    again = weighting.backward(leaves(x=1.0, y=1.0), CTX)
    assert torch.equal(first["x"], again["x"]) and torch.equal(first["y"], again["y"])
    assert not torch.equal(first["x"], second["x"])


def test_weights_are_drawn_over_the_present_tasks_only():
    weights = RandomLossWeighting(["x", "y", "z"]).backward(leaves(x=1.0, z=1.0), CTX)
    assert set(weights) == {"x", "z"}
    assert abs((weights["x"] + weights["z"]).item() - 1.0) < 1e-6
