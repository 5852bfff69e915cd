"""The MLP encoder: shapes, its layers, bad arguments."""

import pytest
import torch

from attnmtl.encoders import MLPEncoder


def test_mlp_flattens_and_returns_a_one_step_sequence():
    enc = MLPEncoder(12, hidden_dims=(8, 5))
    out = enc(torch.randn(4, 3, 4))
    assert out.pooled.shape == (4, 5) and out.sequence.shape == (4, 1, 5)
    assert torch.equal(out.sequence[:, 0], out.pooled)
    assert enc.out_dim == enc.dim == 5


def test_mlp_is_linear_relu_layers():
    enc = MLPEncoder(2, hidden_dims=(2,))
    with torch.no_grad():
        enc.net[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
        enc.net[0].bias.zero_()
    out = enc(torch.tensor([[1.0, 3.0]])).pooled
    assert out.tolist() == [[0.0, 2.0]]  # relu([-2, 2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "swish"}, "activation='swish'"),
        ({"hidden_dims": ()}, "hidden_dims=\\[\\]"),
        ({"dropout": 1.0}, "dropout=1.0"),
    ],
)
def test_mlp_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLPEncoder(3, **kwargs)
    with pytest.raises(ValueError, match="expected 3"):
        MLPEncoder(3)(torch.zeros(2, 4))
