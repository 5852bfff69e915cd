"""MTAN spatial attention masks and squeeze-and-excitation channel attention."""

import pytest
import torch

from attnmtl.attention import ChannelAttention, SpatialAttention

TOL = {"atol": 1e-5, "rtol": 1e-5}


def shape_for(dims: int, batch: int, channels: int) -> tuple[int, ...]:
    return (batch, channels, 7) if dims == 1 else (batch, channels, 3, 4)


def conv1x1(x, conv):
    """A 1×1 convolution as a matmul over the channel axis."""
    out = torch.einsum("oc,bc...->bo...", conv.weight.flatten(1), x)
    return out + conv.bias.view(1, -1, *([1] * (x.dim() - 2)))


def batch_norm_eval(x, bn):
    view = (1, -1, *([1] * (x.dim() - 2)))
    normed = (x - bn.running_mean.view(view)) / torch.sqrt(bn.running_var.view(view) + bn.eps)
    return normed * bn.weight.view(view) + bn.bias.view(view)


def randomise_batch_norms(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()


# --- SpatialAttention ---------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("out_channels", [None, 1, 3])
def test_spatial_mask_matches_mtan_formula(dims, out_channels):
    att = SpatialAttention(4, out_channels=out_channels, hidden_channels=5, dims=dims)
    randomise_batch_norms(att)
    att.eval()
    x = torch.randn(*shape_for(dims, 2, 4))
    conv1, bn1, _, conv2, bn2, _ = att.net
    expected = torch.sigmoid(
        batch_norm_eval(conv1x1(torch.relu(batch_norm_eval(conv1x1(x, conv1), bn1)), conv2), bn2)
    )
    p = torch.randn(*shape_for(dims, 2, out_channels or 4))
    out, mask = att(x, features=p, return_weights=True)
    assert mask.shape == (2, out_channels or 4, *x.shape[2:])
    torch.testing.assert_close(mask, expected, **TOL)
    torch.testing.assert_close(out, expected * p, **TOL)


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("train", [True, False])
def test_spatial_output_is_mask_times_input(dims, train):
    att = SpatialAttention(4, dims=dims).train(train)
    x = torch.randn(*shape_for(dims, 3, 4))
    out, mask = att(x, return_weights=True)
    assert mask.shape == x.shape
    assert ((mask > 0) & (mask < 1)).all()
    torch.testing.assert_close(out, mask * x)
    torch.testing.assert_close(att.eval()(x), att(x, return_weights=True)[1] * x)


def test_spatial_default_hidden_channels():
    att = SpatialAttention(6, out_channels=2)
    assert att.net[0].weight.shape == (2, 6, 1, 1)  # hidden defaults to out_channels
    assert att.net[3].weight.shape == (2, 2, 1, 1)
    att1 = SpatialAttention(6, dims=1)
    assert att1.net[0].weight.shape == (6, 6, 1)


@pytest.mark.parametrize("dims", [1, 2])
def test_spatial_features_gating(dims):
    att = SpatialAttention(4, out_channels=3, dims=dims).eval()
    x = torch.randn(*shape_for(dims, 2, 4))
    p = torch.randn(*shape_for(dims, 2, 3))
    out, mask = att(x, features=p, return_weights=True)
    torch.testing.assert_close(mask, att.net(x))  # computed from x
    torch.testing.assert_close(out, mask * p)
    assert out.shape == p.shape
    # the mask comes from x only: changing p changes the output linearly, not the mask
    out2, mask2 = att(x, features=2 * p, return_weights=True)
    torch.testing.assert_close(mask2, mask)
    torch.testing.assert_close(out2, 2 * out)


@pytest.mark.parametrize("dims", [1, 2])
def test_spatial_single_map_broadcasts_over_channels(dims):
    att = SpatialAttention(4, out_channels=1, dims=dims).eval()
    x = torch.randn(*shape_for(dims, 2, 4))
    p = torch.randn(*shape_for(dims, 2, 7))
    out, mask = att(x, features=p, return_weights=True)
    assert mask.shape == (2, 1, *x.shape[2:])
    assert out.shape == p.shape
    for c in range(7):
        torch.testing.assert_close(out[:, c], mask[:, 0] * p[:, c])
    torch.testing.assert_close(att(x), mask * x)  # gates x itself, every channel alike


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 4, "dims": 3}, "dims=3"),
        ({"in_channels": 4, "dims": 0}, "dims=0"),
        ({"in_channels": 0}, "in_channels=0"),
        ({"in_channels": 4, "out_channels": -1}, "out_channels=-1"),
        ({"in_channels": 4, "hidden_channels": 0}, "hidden_channels=0"),
    ],
)
def test_spatial_constructor_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpatialAttention(**kwargs)


def test_spatial_forward_errors():
    att = SpatialAttention(4, out_channels=3).eval()
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="input"):
        att(torch.randn(2, 5, 3, 3))  # wrong channels
    with pytest.raises(ValueError, match="input"):
        att(torch.randn(2, 4, 3))  # a 1-D map to a 2-D module
    with pytest.raises(ValueError, match="features"):
        att(x, features=torch.randn(2, 3, 3, 4))  # spatial size differs
    with pytest.raises(ValueError, match="features"):
        att(x, features=torch.randn(2, 5, 3, 3))  # 3 gates for 5 channels
    with pytest.raises(ValueError, match="features"):
        att(x)  # 3 gates for x's 4 channels
    with pytest.raises(ValueError, match="features"):
        att(x, features=torch.randn(1, 3, 3, 3))  # batch sizes differ: no silent broadcast


# --- ChannelAttention ---------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(7,), (3, 4), (2, 3, 2)])
def test_channel_matches_se_formula(spatial):
    att = ChannelAttention(8, reduction=2)
    x = torch.randn(3, 8, *spatial)
    w1, b1 = att.fc[0].weight, att.fc[0].bias
    w2, b2 = att.fc[2].weight, att.fc[2].bias
    squeezed = x.reshape(3, 8, -1).mean(-1)  # (B, C)
    gates = torch.sigmoid(torch.relu(squeezed @ w1.T + b1) @ w2.T + b2)
    out, got = att(x, return_weights=True)
    assert got.shape == (3, 8)
    assert ((got > 0) & (got < 1)).all()
    torch.testing.assert_close(got, gates, **TOL)
    torch.testing.assert_close(out, x * gates.view(3, 8, *([1] * len(spatial))), **TOL)
    torch.testing.assert_close(att(x), out)


def test_channel_hand_computed():
    att = ChannelAttention(2, reduction=1, min_hidden=1)  # hidden = max(2 // 1, 1) = 2
    with torch.no_grad():
        att.fc[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        att.fc[0].bias.zero_()
        att.fc[2].weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
        att.fc[2].bias.copy_(torch.tensor([0.0, -1.0]))
    x = torch.tensor([[[1.0, 3.0], [4.0, 6.0]]])  # channel means 2 and 5
    # W1 m = (2, -5) -> relu (2, 0) -> W2 + b = (2, 3)
    g = torch.sigmoid(torch.tensor([2.0, 3.0]))
    out, gates = att(x, return_weights=True)
    torch.testing.assert_close(gates, g[None])
    torch.testing.assert_close(out, x * g[None, :, None])


@pytest.mark.parametrize(
    ("channels", "reduction", "min_hidden", "hidden"),
    [(64, 16, 4, 4), (128, 16, 4, 8), (6, 16, 4, 4), (6, 2, 1, 3)],
)
def test_channel_hidden_size(channels, reduction, min_hidden, hidden):
    att = ChannelAttention(channels, reduction, min_hidden)
    assert att.fc[0].weight.shape == (hidden, channels)
    assert att.fc[2].weight.shape == (channels, hidden)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 0}, "channels=0"),
        ({"channels": -3}, "channels=-3"),
        ({"channels": 8, "reduction": 0}, "reduction=0"),
        ({"channels": 8, "min_hidden": 0}, "min_hidden=0"),
    ],
)
def test_channel_constructor_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChannelAttention(**kwargs)


def test_channel_forward_errors():
    att = ChannelAttention(4)
    with pytest.raises(ValueError, match="input"):
        att(torch.randn(2, 4))  # no spatial axis
    with pytest.raises(ValueError, match="input"):
        att(torch.randn(2, 5, 3))
