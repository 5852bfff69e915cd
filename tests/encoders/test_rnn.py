"""RNN encoders: variable lengths never leak padding, pooling variants, shared scorers."""

import pytest
import torch
from torch import nn

from attnmtl.attention import AttentionPooling
from attnmtl.encoders import RNNEncoder

CELLS = ["rnn", "gru", "lstm"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["attention", "mean", "max", "last"])
def test_padding_never_changes_a_sample(cell, bidirectional, pooling):
    enc = RNNEncoder(3, 5, num_layers=2, cell=cell, bidirectional=bidirectional, pooling=pooling)
    enc.eval()
    short = torch.randn(1, 4, 3)
    padded = torch.cat([short, 100 * torch.randn(1, 3, 3)], dim=1)  # garbage after step 4
    alone = enc(short)
    batch = enc(torch.cat([padded, torch.randn(1, 7, 3)]), lengths=torch.tensor([4, 7]))
    torch.testing.assert_close(batch.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.sequence[0, :4], alone.sequence[0], atol=1e-5, rtol=1e-5)
    assert torch.all(batch.sequence[0, 4:] == 0)
    if pooling == "attention":
        assert torch.all(batch.attention[0, 4:] == 0)
        torch.testing.assert_close(batch.attention[0, :4], alone.attention[0])


def test_last_pooling_is_the_final_hidden_state():
    enc = RNNEncoder(2, 4, num_layers=2, cell="gru", bidirectional=True, pooling="last")
    x = torch.randn(3, 6, 2)
    _, h_n = enc.rnn(x)  # (layers × dirs, B, H)
    expected = torch.cat([h_n[-2], h_n[-1]], dim=-1)
    torch.testing.assert_close(enc(x).pooled, expected)
    assert enc.out_dim == 8


def test_attention_pooling_follows_the_seed_formula():
    enc = RNNEncoder(2, 4, cell="rnn")
    x = torch.randn(3, 6, 2)
    out, _ = enc.rnn(x)
    weights = torch.softmax(enc.pool.scorer(out).squeeze(-1), dim=1)
    expected = torch.bmm(weights.unsqueeze(1), out).squeeze(1)
    result = enc(x)
    torch.testing.assert_close(result.pooled, expected)
    torch.testing.assert_close(result.attention, weights)


def test_mask_must_be_right_padded_and_is_equivalent_to_lengths():
    enc = RNNEncoder(2, 4)
    x = torch.randn(2, 5, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(
        enc(x, mask=mask).pooled, enc(x, lengths=torch.tensor([3, 5])).pooled
    )
    with pytest.raises(ValueError, match="right-padded"):
        enc(x, mask=torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="lengths"):
        enc(x, lengths=torch.tensor([0, 5]))


def test_a_shared_scorer_is_one_module():
    pool = AttentionPooling(4)
    a, b = RNNEncoder(2, 4, pooling=pool), RNNEncoder(2, 4, pooling=pool)
    assert a.pool is b.pool
    params = {id(p) for p in nn.ModuleList([a, b]).parameters()}
    assert len(params) == 2 * len(list(a.rnn.parameters())) + len(list(pool.parameters()))


def test_several_queries_flatten_into_the_pooled_vector():
    enc = RNNEncoder(2, 4, pooling_options={"num_queries": 3, "hidden_dim": 8})
    out = enc(torch.randn(2, 5, 2))
    assert enc.out_dim == 12 and out.pooled.shape == (2, 12)
    assert out.attention.shape == (2, 3, 5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"cell": "transformer"}, "cell"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"pooling": "median"}, "pooling"),
        ({"pooling": "mean", "pooling_options": {"num_queries": 2}}, "num_queries"),
        ({"pooling": "last", "pooling_options": {"top_k": 2}}, "top_k"),
        ({"pooling_options": {"queries": 2}}, "queries"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = {"input_dim": 2, "hidden_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        RNNEncoder(**args)


def test_wrong_input_width_is_reported():
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        RNNEncoder(2, 4)(torch.randn(2, 5, 3))
