"""Attention pooling: the seed's softmax(Linear(x)) weighted sum, MLP scorer, several queries."""

import pytest
import torch
import torch.nn.functional as F

from attnmtl.attention import AttentionPooling

B, T, D = 3, 5, 4
TOL = {"atol": 1e-5, "rtol": 1e-5}


def seed_pool(x, linear):
    """The seed note's AttnRNN: softmax(Linear(out).squeeze(2), dim=1), then bmm."""
    weights = torch.softmax(linear(x).squeeze(2), dim=1)  # (B, T)
    return torch.bmm(weights.unsqueeze(1), x).squeeze(1), weights


def test_matches_seed_formula():
    pool = AttentionPooling(D)
    x = torch.randn(B, T, D)
    out, weights = pool(x, return_weights=True)
    ref_out, ref_weights = seed_pool(x, pool.scorer)
    assert out.shape == (B, D) and weights.shape == (B, T)
    torch.testing.assert_close(weights, ref_weights, **TOL)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(pool(x), out)


def test_hand_computed():
    pool = AttentionPooling(2)
    with torch.no_grad():
        pool.scorer.weight.copy_(torch.tensor([[1.0, 0.0]]))
        pool.scorer.bias.fill_(7.0)  # a shared bias does not change the softmax
    x = torch.tensor([[[0.0, 1.0], [1.0, 3.0], [0.0, 5.0]]])  # scores 7, 8, 7
    e = torch.e
    w = torch.tensor([[1 / (2 + e), e / (2 + e), 1 / (2 + e)]])
    out, weights = pool(x, return_weights=True)
    torch.testing.assert_close(weights, w)
    torch.testing.assert_close(out, w @ x[0])


def test_masked_steps_and_empty_sample():
    pool = AttentionPooling(D)
    x = torch.randn(B, T, D, requires_grad=True)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2] = False
    out, weights = pool(x, mask, return_weights=True)
    assert (weights[0, 3:] == 0).all()
    ref_out, ref_weights = seed_pool(x[0:1, :3], pool.scorer)
    torch.testing.assert_close(weights[0, :3], ref_weights[0], **TOL)
    torch.testing.assert_close(out[0], ref_out[0], **TOL)
    torch.testing.assert_close(weights[1], seed_pool(x[1:2], pool.scorer)[1][0], **TOL)
    assert (weights[2] == 0).all() and (out[2] == 0).all()
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    assert torch.isfinite(grad).all()
    assert (grad[2] == 0).all()
    # changing a masked step changes nothing
    changed = x.detach().clone()
    changed[0, 3:] = 100.0
    torch.testing.assert_close(pool(changed, mask)[0], out[0].detach())


def test_mlp_scorer():
    pool = AttentionPooling(D, hidden_dim=6)
    x = torch.randn(B, T, D)
    lin1, lin2 = pool.scorer[0], pool.scorer[2]
    assert lin2.bias is None
    scores = torch.tanh(x @ lin1.weight.T + lin1.bias) @ lin2.weight[0]  # uᵀ tanh(W x + b)
    weights = torch.softmax(scores, -1)
    out, got = pool(x, return_weights=True)
    torch.testing.assert_close(got, weights, **TOL)
    torch.testing.assert_close(out, torch.einsum("bt,btd->bd", weights, x), **TOL)


@pytest.mark.parametrize("hidden_dim", [None, 6])
def test_several_queries(hidden_dim):
    pool = AttentionPooling(D, num_queries=3, hidden_dim=hidden_dim)
    assert pool.out_dim == 3 * D
    x = torch.randn(B, T, D)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, :2] = False
    out, weights = pool(x, mask, return_weights=True)
    assert out.shape == (B, 3, D) and weights.shape == (B, 3, T)
    scores = pool.scorer(x)  # (B, T, Q)
    for q in range(3):
        expected = torch.softmax(scores[..., q].masked_fill(~mask, float("-inf")), -1)
        torch.testing.assert_close(weights[:, q], expected, **TOL)
        torch.testing.assert_close(out[:, q], torch.einsum("bt,btd->bd", expected, x), **TOL)
    assert AttentionPooling(D).out_dim == D


@pytest.mark.parametrize("hidden_dim", [None, 3])
def test_gradcheck(hidden_dim):
    pool = AttentionPooling(D, num_queries=2, hidden_dim=hidden_dim).double()
    x = torch.randn(2, T, D, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, True, False], [False] * T])
    assert torch.autograd.gradcheck(lambda x: pool(x, mask, return_weights=True), (x,))


def test_dropout():
    pool = AttentionPooling(D, dropout=0.5)
    x = torch.randn(8, T, D)
    pool.eval()
    out, weights = pool(x, return_weights=True)
    torch.testing.assert_close(out, torch.einsum("bt,btd->bd", weights, x), **TOL)
    torch.testing.assert_close(pool(x), out)
    pool.train()
    train_out, train_weights = pool(x, return_weights=True)
    torch.testing.assert_close(train_weights, weights)  # weights before dropout
    torch.testing.assert_close(train_weights.sum(-1), torch.ones(8))
    assert (train_out - out).abs().max() > 1e-2


def test_argmax_pooling_picks_best_step():
    soft = AttentionPooling(D)
    hard = AttentionPooling(D, selection="argmax")
    hard.load_state_dict(soft.state_dict())
    x = torch.randn(B, T, D)
    _, soft_w = soft(x, return_weights=True)
    out, weights = hard(x, return_weights=True)
    best = soft_w.argmax(-1)
    torch.testing.assert_close(weights, F.one_hot(best, T).float())
    torch.testing.assert_close(out, x[torch.arange(B), best])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, r"\bdim=0"),
        ({"dim": -4}, r"\bdim=-4"),
        ({"dim": D, "num_queries": 0}, "num_queries=0"),
        ({"dim": D, "hidden_dim": 0}, "hidden_dim=0"),
        ({"dim": D, "dropout": 1.5}, "dropout=1.5"),
        ({"dim": D, "selection": "nope"}, "selection='nope'"),
        ({"dim": D, "selection": "topk"}, "top_k=None"),
        ({"dim": D, "top_k": 1}, "top_k=1"),
        ({"dim": D, "selection": "gumbel", "tau": -0.1}, "tau=-0.1"),
    ],
)
def test_constructor_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionPooling(**kwargs)


def test_forward_shape_errors():
    pool = AttentionPooling(D)
    x = torch.randn(B, T, D)
    with pytest.raises(ValueError, match="input"):
        pool(torch.randn(B, T, D + 1))
    with pytest.raises(ValueError, match="input"):
        pool(torch.randn(B, D))
    with pytest.raises(ValueError, match="key_padding_mask"):
        pool(x, torch.ones(B, T))
    with pytest.raises(ValueError, match="key_padding_mask"):
        pool(x, torch.ones(B, T + 1, dtype=torch.bool))
