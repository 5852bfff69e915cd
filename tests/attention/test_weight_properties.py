"""Property tests of the weight convention shared by every normalised attention module.

For random shapes and random boolean key-padding masks (all-masked rows included), with every
selection: masked keys get exactly zero weight, rows with a real key sum to one, rows without
one are exactly zero (and so is their output), hard selections keep the right number of keys,
and nothing is NaN or infinite, forwards or backwards.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmtl.attention import (
    SELECTIONS,
    AdditiveAttention,
    AttentionPooling,
    DotAttention,
    GeneralAttention,
    MultiHeadAttention,
    ScaledDotProductAttention,
)

SETTINGS = settings(max_examples=25, deadline=None)
TOP_K = 2
DQ, DK, DV = 3, 4, 2  # query, key and value sizes of the soft scorers
D, H = 4, 2  # MultiHeadAttention width and heads


def selection_kwargs(selection: str) -> dict:
    return {"selection": selection, "top_k": TOP_K if selection == "topk" else None}


def build(kind: str, selection: str, num_queries: int):
    kw = selection_kwargs(selection)
    if kind == "additive":
        return AdditiveAttention(DQ, DK, 5, **kw)
    if kind == "dot":
        return DotAttention(**kw)
    if kind == "general":
        return GeneralAttention(DQ, DK, **kw)
    if kind == "scaled_dot":
        return ScaledDotProductAttention(**kw)
    if kind == "mha":
        return MultiHeadAttention(D, H, bias=False, **kw)  # no bias: an empty row outputs zero
    return AttentionPooling(D, num_queries=num_queries, **kw)


def run(kind, module, batch, tq, tk, mask, causal, num_queries):
    """Output and weights, the output without weights (the fused path where there is one), the
    boolean ``valid`` (weights' shape) and the grad-carrying inputs."""
    if kind == "pooling":
        x = torch.randn(batch, tk, D, requires_grad=True)
        out, weights = module(x, mask, return_weights=True)
        plain = module(x, mask)
        valid = mask if num_queries == 1 else mask[:, None, :]
        return out, weights, plain, valid.expand_as(weights), [x]
    if kind == "mha":
        q = torch.randn(batch, tq, D, requires_grad=True)
        kv = torch.randn(batch, tk, D, requires_grad=True)
        out, weights = module(q, kv, key_padding_mask=mask, causal=causal, return_weights=True)
        plain = module(q, kv, key_padding_mask=mask, causal=causal)
        valid = mask[:, None, None, :]
        if causal:
            valid = valid & torch.ones(tq, tk, dtype=torch.bool).tril()
        return out, weights, plain, valid.expand_as(weights), [q, kv]
    dq = DK if kind in ("dot", "scaled_dot") else DQ
    q = torch.randn(batch, tq, dq, requires_grad=True)
    k = torch.randn(batch, tk, DK, requires_grad=True)
    v = torch.randn(batch, tk, DV, requires_grad=True)
    out, weights = module(q, k, v, key_padding_mask=mask, return_weights=True)
    plain = module(q, k, v, key_padding_mask=mask)
    return out, weights, plain, mask[:, None, :].expand_as(weights), [q, k, v]


@st.composite
def cases(draw):
    batch = draw(st.integers(1, 3))
    tq = draw(st.integers(1, 4))
    tk = draw(st.integers(1, 5))
    rows = st.lists(st.booleans(), min_size=tk, max_size=tk)
    mask = draw(st.lists(rows, min_size=batch, max_size=batch))
    if draw(st.booleans()):
        mask[draw(st.integers(0, batch - 1))] = [False] * tk  # an all-masked sample, often
    return {
        "batch": batch,
        "tq": tq,
        "tk": tk,
        "mask": torch.tensor(mask, dtype=torch.bool),
        "causal": draw(st.booleans()),
        "num_queries": draw(st.integers(1, 2)),
        "training": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


KINDS = ["additive", "dot", "general", "scaled_dot", "mha", "pooling"]


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(case=cases())
def test_weights_respect_masks(kind, selection, case):
    torch.manual_seed(case["seed"])
    module = build(kind, selection, case["num_queries"]).train(case["training"])
    out, weights, plain, valid, inputs = run(
        kind,
        module,
        case["batch"],
        case["tq"],
        case["tk"],
        case["mask"],
        case["causal"],
        case["num_queries"],
    )
    assert torch.isfinite(out).all()
    assert torch.isfinite(weights).all()
    assert (weights >= 0).all()
    assert (weights[~valid] == 0).all()  # masked keys: exactly zero
    live = valid.any(-1)
    assert (weights[~live] == 0).all()  # a row with no key: exactly zero
    sums = weights.sum(-1)[live]
    torch.testing.assert_close(sums, torch.ones_like(sums))

    nonzero = (weights > 0).sum(-1)
    n_valid = valid.sum(-1)
    if selection == "topk":
        assert torch.equal(nonzero, n_valid.clamp(max=TOP_K))
    elif selection in ("gumbel", "argmax"):
        assert torch.equal(nonzero, live.long())

    # without weights (fused where possible) the output is the same, bar a fresh Gumbel draw
    assert torch.isfinite(plain).all()
    if not (selection == "gumbel" and case["training"]):
        torch.testing.assert_close(plain, out, atol=1e-5, rtol=1e-5)

    # a sample whose keys are all padded attends to nothing: its attention output is zero
    empty = ~case["mask"].any(-1)
    assert (out[empty] == 0).all()

    grads = torch.autograd.grad((out * torch.randn_like(out)).sum(), inputs, allow_unused=True)
    for grad in grads:
        assert grad is None or torch.isfinite(grad).all()
