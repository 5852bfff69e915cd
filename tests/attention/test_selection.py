"""Scores to weights: masked softmax, top-k, Gumbel and argmax straight-through, Selection."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmtl.attention import (
    SELECTIONS,
    Selection,
    argmax_st,
    gumbel_softmax_st,
    masked_softmax,
    topk_softmax,
)

SETTINGS = settings(max_examples=40, deadline=None)


def distinct_scores(shape: tuple[int, ...], seed: int, dtype=torch.float32) -> torch.Tensor:
    """Scores without ties (a permutation of a 0.5-spaced grid per row, plus a shared offset)."""
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    rows = math.prod(shape[:-1])
    perm = torch.stack([torch.randperm(n, generator=g) for _ in range(rows)]).to(dtype)
    return (0.5 * perm + torch.randn(rows, 1, generator=g, dtype=dtype)).reshape(shape)


@st.composite
def scores_and_mask(draw, max_rows: int = 4, max_keys: int = 6):
    rows = draw(st.integers(1, max_rows))
    keys = draw(st.integers(1, max_keys))
    mask = draw(
        st.lists(
            st.lists(st.booleans(), min_size=keys, max_size=keys), min_size=rows, max_size=rows
        )
    )
    if draw(st.booleans()):
        mask[0] = [False] * keys  # make sure all-masked rows are exercised often
    seed = draw(st.integers(0, 2**16))
    return distinct_scores((rows, keys), seed), torch.tensor(mask, dtype=torch.bool)


# --- masked_softmax ----------------------------------------------------------------------------


def test_masked_softmax_hand_computed():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    e1, e2, e3 = math.exp(1.0), math.exp(2.0), math.exp(3.0)
    total = e1 + e2 + e3
    torch.testing.assert_close(
        masked_softmax(scores), torch.tensor([[e1 / total, e2 / total, e3 / total]])
    )
    weights = masked_softmax(scores, torch.tensor([[True, False, True]]))
    torch.testing.assert_close(weights, torch.tensor([[e1 / (e1 + e3), 0.0, e3 / (e1 + e3)]]))
    assert weights[0, 1] == 0


def test_masked_softmax_all_masked_row_is_zero_with_zero_grad():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[False, False, False], [True, True, False]])
    weights = masked_softmax(scores, mask)
    assert (weights[0] == 0).all()
    assert weights[1, 2] == 0
    torch.testing.assert_close(weights[1, :2], torch.softmax(torch.tensor([0.5, -1.0]), -1))
    (weights * torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[0] == 0).all()
    assert scores.grad[1, 2] == 0  # a masked key gets no gradient
    assert scores.grad[1, :2].abs().sum() > 0


def test_masked_softmax_broadcast_mask_and_large_scores():
    scores = torch.tensor([[[1e4, 0.0, -3.0], [2.0, 1e4, 1.0]]])  # (1, 2, 3)
    mask = torch.tensor([[[False, True, True]]])  # (1, 1, 3), broadcast over the query axis
    weights = masked_softmax(scores, mask)
    assert (weights[..., 0] == 0).all()  # a huge masked score still gets exactly zero
    torch.testing.assert_close(weights[0, 0, 1:], torch.softmax(torch.tensor([0.0, -3.0]), -1))
    torch.testing.assert_close(weights[0, 1], torch.tensor([0.0, 1.0, 0.0]))


def test_masked_softmax_gradcheck():
    scores = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 3, 5) > 0.4
    mask[0, 1] = False  # an all-masked row
    assert torch.autograd.gradcheck(lambda s: masked_softmax(s, mask), (scores,))
    assert torch.autograd.gradcheck(masked_softmax, (scores,))


@SETTINGS
@given(scores_and_mask())
def test_masked_softmax_properties(case):
    scores, mask = case
    weights = masked_softmax(scores, mask)
    assert torch.isfinite(weights).all()
    assert (weights[~mask] == 0).all()
    live = mask.any(-1)
    assert (weights[~live] == 0).all()
    torch.testing.assert_close(weights[live].sum(-1), torch.ones(int(live.sum())))
    for row in torch.nonzero(live).flatten():
        m = mask[row]
        torch.testing.assert_close(weights[row, m], torch.softmax(scores[row, m], -1))


# --- topk_softmax ------------------------------------------------------------------------------


def test_topk_softmax_hand_computed():
    scores = torch.tensor([[0.5, 3.0, 1.0, 2.0]])
    e1, e2, e3 = math.exp(1.0), math.exp(2.0), math.exp(3.0)
    torch.testing.assert_close(
        topk_softmax(scores, 2), torch.tensor([[0.0, e3 / (e3 + e2), 0.0, e2 / (e3 + e2)]])
    )
    # the best key masked: the next two real keys are kept
    mask = torch.tensor([[True, False, True, True]])
    torch.testing.assert_close(
        topk_softmax(scores, 2, mask), torch.tensor([[0.0, 0.0, e1 / (e1 + e2), e2 / (e1 + e2)]])
    )
    # fewer real keys than k: only the real ones are kept
    one = torch.tensor([[True, False, False, False]])
    assert torch.equal(topk_softmax(scores, 2, one), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    # k >= number of keys: plain masked softmax
    torch.testing.assert_close(topk_softmax(scores, 4, mask), masked_softmax(scores, mask))
    torch.testing.assert_close(topk_softmax(scores, 9), torch.softmax(scores, -1))


@SETTINGS
@given(scores_and_mask(max_keys=8), st.integers(1, 8))
def test_topk_keeps_the_k_largest_renormalised(case, k):
    scores, mask = case
    weights = topk_softmax(scores, k, mask)
    assert torch.isfinite(weights).all()
    assert (weights[~mask] == 0).all()
    for row in range(scores.shape[0]):
        valid = torch.nonzero(mask[row]).flatten()
        kept = torch.nonzero(weights[row]).flatten()
        assert len(kept) == min(k, len(valid))
        if len(valid) == 0:
            continue
        best = valid[scores[row, valid].argsort(descending=True)[:k]]
        assert set(kept.tolist()) == set(best.tolist())
        torch.testing.assert_close(weights[row, best], torch.softmax(scores[row, best], -1))


def test_topk_softmax_gradcheck_through_selected_keys():
    scores = distinct_scores((3, 6), seed=3, dtype=torch.float64).requires_grad_()
    mask = torch.tensor([[True] * 6, [True, False, True, True, False, True], [False] * 6])
    assert torch.autograd.gradcheck(lambda s: topk_softmax(s, 3, mask), (scores,))
    weights = topk_softmax(scores, 3, mask)
    (weights * torch.randn(3, 6, dtype=torch.float64)).sum().backward()
    assert (scores.grad[weights == 0] == 0).all()  # dropped keys get no gradient
    assert (scores.grad[weights > 0] != 0).all()


# --- Gumbel-softmax straight-through ------------------------------------------------------------


def one_hot_rows(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Assert every row with a real key is one-hot on a real key (others zero); return the index."""
    live = mask.any(-1)
    assert (weights[~live] == 0).all()
    assert (weights[~mask] == 0).all()
    index = weights.argmax(-1)
    assert mask.gather(-1, index[..., None])[live].all()
    hot = weights.gather(-1, index[..., None]).squeeze(-1)
    torch.testing.assert_close(hot[live], torch.ones(int(live.sum())))
    assert (weights.scatter(-1, index[..., None], 0.0) == 0).all()
    return index


def test_gumbel_train_is_one_hot_with_gradient():
    scores = torch.randn(4, 5, requires_grad=True)
    mask = torch.tensor(
        [[True] * 5, [False, True, True, False, True], [False] * 5, [True] + [False] * 4]
    )
    weights = gumbel_softmax_st(scores, tau=0.7, mask=mask, training=True)
    one_hot_rows(weights, mask)
    (weights * torch.randn(4, 5)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[:2].abs().sum(-1) > 0).all()  # the relaxed sample's gradient
    assert (scores.grad[~mask] == 0).all()
    assert (scores.grad[2] == 0).all()


def test_gumbel_train_samples_follow_the_softmax():
    # Gumbel-max trick: argmax(s + g) with g ~ Gumbel(0, 1) is distributed as softmax(s).
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    scores = probs.log().expand(4000, 4)
    picks = gumbel_softmax_st(scores, tau=2.0, training=True).argmax(-1)
    freq = torch.bincount(picks, minlength=4).float() / 4000
    torch.testing.assert_close(freq, probs, atol=0.035, rtol=0)


def test_gumbel_gradient_is_the_tempered_relaxation():
    # At a very high temperature the relaxed sample softmax((s + G) / tau) is uniform to O(1/tau)
    # whatever the noise G, so the straight-through gradient of (w * g).sum() with respect to the
    # scores is (g - mean(g)) / (n tau).
    n, tau = 5, 1e4
    scores = torch.randn(3, n, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, n, dtype=torch.float64)
    (gumbel_softmax_st(scores, tau=tau, training=True) * g).sum().backward()
    expected = (g - g.mean(-1, keepdim=True)) / (n * tau)
    torch.testing.assert_close(scores.grad, expected, rtol=0, atol=1e-2 * expected.abs().max())


def test_gumbel_train_draws_vary():
    scores = torch.zeros(64, 5)
    first = gumbel_softmax_st(scores, training=True)
    second = gumbel_softmax_st(scores, training=True)
    assert not torch.equal(first, second)


def test_gumbel_eval_is_deterministic_argmax():
    scores = torch.randn(3, 6)
    mask = torch.rand(3, 6) > 0.3
    mask[1] = False
    mask[2, 0] = True
    first = gumbel_softmax_st(scores, tau=0.5, mask=mask, training=False)
    second = gumbel_softmax_st(scores, tau=0.5, mask=mask, training=False)
    assert torch.equal(first, second)
    index = one_hot_rows(first, mask)
    expected = scores.masked_fill(~mask, float("-inf")).argmax(-1)
    live = mask.any(-1)
    assert torch.equal(index[live], expected[live])


# --- argmax straight-through --------------------------------------------------------------------


def test_argmax_st_forward_one_hot_backward_softmax():
    scores = torch.randn(3, 2, 5, requires_grad=True)
    mask = torch.rand(3, 1, 5) > 0.3
    mask[0] = False
    mask[1, 0, 2] = True
    g = torch.randn(3, 2, 5)
    weights = argmax_st(scores, mask)
    full = mask.expand_as(weights)
    index = one_hot_rows(weights, full)
    expected = scores.detach().masked_fill(~mask, float("-inf")).argmax(-1)
    live = full.any(-1)
    assert torch.equal(index[live], expected[live])
    (weights * g).sum().backward()
    st_grad = scores.grad.clone()
    scores.grad = None
    (masked_softmax(scores, mask) * g).sum().backward()
    torch.testing.assert_close(st_grad, scores.grad)
    assert st_grad[1:].abs().sum() > 0


def test_argmax_st_without_mask():
    scores = torch.tensor([[0.3, 2.0, -1.0], [5.0, 4.0, 4.5]])
    weights = argmax_st(scores)
    torch.testing.assert_close(weights, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


# --- Selection ----------------------------------------------------------------------------------


def test_selection_dispatch():
    scores = distinct_scores((3, 5), seed=1)
    mask = torch.rand(3, 5) > 0.3
    torch.testing.assert_close(Selection()(scores, mask), masked_softmax(scores, mask))
    torch.testing.assert_close(
        Selection("topk", top_k=2)(scores, mask), topk_softmax(scores, 2, mask)
    )
    torch.testing.assert_close(Selection("argmax")(scores, mask), argmax_st(scores, mask))
    torch.testing.assert_close(
        Selection("gumbel", tau=0.3)(scores, mask, training=False), argmax_st(scores, mask)
    )
    assert Selection().is_softmax
    assert not any(
        Selection(k, top_k=1 if k == "topk" else None).is_softmax for k in SELECTIONS[1:]
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "sparsemax"}, "selection='sparsemax'"),
        ({"kind": "topk"}, "top_k=None"),
        ({"kind": "topk", "top_k": 0}, "top_k=0"),
        ({"kind": "topk", "top_k": -2}, "top_k=-2"),
        ({"kind": "topk", "top_k": True}, "top_k=True"),
        ({"kind": "topk", "top_k": 1.5}, "top_k=1.5"),
        ({"kind": "softmax", "top_k": 2}, "top_k=2"),
        ({"kind": "gumbel", "top_k": 2}, "top_k=2"),
        ({"kind": "gumbel", "tau": 0.0}, "tau=0.0"),
        ({"kind": "softmax", "tau": -1.0}, "tau=-1.0"),
        ({"kind": "gumbel", "tau": float("nan")}, "tau=nan"),
    ],
)
def test_selection_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Selection(**kwargs)
