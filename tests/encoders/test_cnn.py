"""Small CNNs: feature maps exposed, attention shaped like the map, pooling masks."""

import pytest
import torch

from attnmtl.attention import ChannelAttention, SpatialAttention
from attnmtl.encoders import ConvEncoder, MaskedPooling


@pytest.mark.parametrize("attention", ["none", "spatial", "channel"])
def test_1d_maps_and_attention_shapes(attention):
    enc = ConvEncoder(1, (8, 16, 16), dims=1, attention=attention)
    out = enc(torch.randn(4, 40))  # (B, L) read as one channel
    assert [tuple(m.shape) for m in out.feature_maps] == [(4, 8, 20), (4, 16, 10), (4, 16, 5)]
    assert out.pooled.shape == (4, 16) and out.sequence.shape == (4, 5, 16)
    assert out.attention.shape == (4, 5)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(4))
    kinds = {type(b.attention) for b in enc.blocks}
    expected = {"none": {type(None)}, "spatial": {SpatialAttention}, "channel": {ChannelAttention}}
    assert kinds == expected[attention]


def test_2d_attention_map_has_the_last_maps_shape():
    enc = ConvEncoder(3, (8, 8), dims=2, attention="spatial")
    out = enc(torch.randn(2, 3, 12, 10))
    assert out.feature_maps[-1].shape == (2, 8, 3, 3)
    assert out.attention.shape == (2, 3, 3)
    # the pooled vector is the attention-weighted sum of the last map's positions
    last = out.feature_maps[-1].flatten(2)  # (B, C, S)
    torch.testing.assert_close(out.pooled, (last * out.attention.flatten(1)[:, None]).sum(-1))


def test_every_parameter_gets_a_gradient():
    enc = ConvEncoder(1, (4, 4), dims=1, attention="spatial")
    enc(torch.randn(3, 16)).pooled.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dims": 3}, "dims"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"attention": "cbam"}, "attention"),
        ({"channels": ()}, "channels"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ConvEncoder(**kwargs)


def test_masked_mean_and_max_by_hand():
    x = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(MaskedPooling(2, "mean")(x, mask), torch.tensor([[2.0, 1.0]]))
    torch.testing.assert_close(MaskedPooling(2, "max")(x, mask), torch.tensor([[3.0, 4.0]]))
    none = torch.zeros(1, 3, dtype=torch.bool)
    assert torch.all(MaskedPooling(2, "mean")(x, none) == 0)
    assert torch.all(MaskedPooling(2, "max")(x, none) == 0)
