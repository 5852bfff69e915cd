"""Transformer encoder: equal to torch's pre-norm layer, masks and causality respected."""

import math

import pytest
import torch
from torch import nn

from attnmtl.encoders import TransformerEncoder, TransformerEncoderLayer, sinusoidal_table


def copy_into_torch_layer(ours: TransformerEncoderLayer, dim: int, heads: int, ff: int):
    ref = nn.TransformerEncoderLayer(
        dim, heads, ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.attn.in_proj.weight)
        ref.self_attn.in_proj_bias.copy_(ours.attn.in_proj.bias)
        ref.self_attn.out_proj.weight.copy_(ours.attn.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(ours.attn.out_proj.bias)
        ref.linear1.load_state_dict(ours.ff[0].state_dict())
        ref.linear2.load_state_dict(ours.ff[3].state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.norm2.load_state_dict(ours.norm2.state_dict())
    return ref.eval()


@pytest.mark.parametrize("return_weights", [False, True])
def test_layer_equals_torch_pre_norm_layer(return_weights):
    dim, heads, ff = 16, 4, 24
    ours = TransformerEncoderLayer(dim, heads, ff).eval()
    ref = copy_into_torch_layer(ours, dim, heads, ff)
    x = torch.randn(3, 7, dim)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    got, weights = ours(x, mask, return_weights=return_weights)
    expected = ref(x, src_key_padding_mask=~mask)
    torch.testing.assert_close(got[1:], expected[1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0, :4], expected[0, :4], atol=1e-5, rtol=1e-5)
    assert (weights is not None) == return_weights


def test_padded_content_never_reaches_real_positions():
    enc = TransformerEncoder(3, dim=16, num_layers=2, num_heads=4, dropout=0.0).eval()
    x = torch.randn(2, 6, 3)
    y = x.clone()
    y[0, 4:] = 50.0
    lengths = torch.tensor([4, 6])
    a, b = enc(x, lengths=lengths), enc(y, lengths=lengths)
    torch.testing.assert_close(a.pooled, b.pooled)
    torch.testing.assert_close(a.sequence[0, :4], b.sequence[0, :4])
    assert torch.all(a.attention[0, 4:] == 0)


def test_causal_layers_do_not_see_the_future():
    enc = TransformerEncoder(3, dim=16, num_layers=2, num_heads=2, dropout=0.0, causal=True).eval()
    x = torch.randn(1, 6, 3)
    y = x.clone()
    y[0, 3:] = torch.randn(3, 3)
    torch.testing.assert_close(enc(x).sequence[0, :3], enc(y).sequence[0, :3])
    assert not torch.allclose(enc(x).sequence[0, 3:], enc(y).sequence[0, 3:])


def test_layer_weights_are_returned_per_layer_and_masked():
    enc = TransformerEncoder(3, dim=8, num_layers=3, num_heads=2, dropout=0.0)
    out = enc(torch.randn(2, 5, 3), lengths=torch.tensor([2, 5]), return_layer_weights=True)
    assert len(out.layer_attention) == 3
    for w in out.layer_attention:
        assert w.shape == (2, 2, 5, 5)
        assert torch.all(w[0, :, :, 2:] == 0)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 5))
    assert enc(torch.randn(2, 5, 3)).layer_attention is None


def test_token_input_masks_padding_tokens():
    enc = TransformerEncoder(
        vocab_size=20, dim=8, num_layers=1, num_heads=2, padding_idx=0, dropout=0
    )
    tokens = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0]])
    torch.testing.assert_close(enc(tokens).pooled, enc(padded).pooled, atol=1e-6, rtol=1e-6)


def test_sinusoidal_table_matches_the_formula():
    table = sinusoidal_table(10, 6)
    p, i = 3, 1
    torch.testing.assert_close(table[p, 2 * i], torch.tensor(math.sin(p / 10000 ** (2 * i / 6))))
    torch.testing.assert_close(
        table[p, 2 * i + 1], torch.tensor(math.cos(p / 10000 ** (2 * i / 6)))
    )
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    assert sinusoidal_table(4, 5).shape == (4, 5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"input_dim": 3, "vocab_size": 10}, "vocab_size"),
        ({}, "input_dim"),
        ({"input_dim": 3, "num_heads": 3}, "num_heads"),
        ({"input_dim": 3, "positional": "rotary"}, "positional"),
        ({"input_dim": 3, "ff_dim": 0}, "ff_dim"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TransformerEncoder(**{"dim": 8, **kwargs})


def test_too_long_sequences_are_refused():
    enc = TransformerEncoder(3, dim=8, num_heads=2, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        enc(torch.randn(1, 5, 3))
