"""Single-head soft attention: additive, dot, general and scaled dot-product."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnmtl.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
    ScaledDotProductAttention,
    attention_mask,
    sdpa_reference,
)

B, TQ, TK, D, DV = 2, 3, 5, 4, 6
TOL = {"atol": 1e-5, "rtol": 1e-5}


def explicit_softmax_attention(scores, value, mask=None):
    """Softmax over unmasked keys (-inf fill, rows with no key set to zero), then weights @ v."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, -1), nan=0.0)
    return torch.einsum("bqk,bkv->bqv", weights, value), weights


def assert_matches_explicit(att, q, k, v, scores, mask):
    """``att``'s weights and output equal softmax(scores) over unmasked keys, then @ v.

    Returns the explicit (output, weights) for further checks.
    """
    out, weights = att(q, k, v, key_padding_mask=mask, return_weights=True)
    ref_out, ref_weights = explicit_softmax_attention(
        scores, v, None if mask is None else mask[:, None, :]
    )
    torch.testing.assert_close(weights, ref_weights, **TOL)
    torch.testing.assert_close(out, ref_out, **TOL)
    return ref_out, ref_weights


def padding_mask(kind: str, batch: int = B, keys: int = TK):
    if kind == "none":
        return None
    mask = torch.ones(batch, keys, dtype=torch.bool)
    mask[0, -2:] = False
    if kind == "fully_masked":
        mask[1] = False
    return mask


# --- hand-computed values -----------------------------------------------------------------------


def test_additive_score_hand_computed():
    att = AdditiveAttention(query_dim=2, key_dim=2, hidden_dim=2)
    with torch.no_grad():
        att.query_proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        att.key_proj.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
        att.key_proj.bias.copy_(torch.tensor([0.5, -0.5]))
        att.v.weight.copy_(torch.tensor([[2.0, -1.0]]))
    q = torch.tensor([[[1.0, 2.0]]])  # (1, 1, 2)
    k = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # (1, 2, 2)
    v = torch.tensor([[[10.0], [20.0]]])  # (1, 2, 1)
    # W_q q = (1, 2); W_k k1 + b = (1.5, -1.5); W_k k2 + b = (1.5, -0.5)
    s1 = 2 * math.tanh(2.5) - math.tanh(0.5)
    s2 = 2 * math.tanh(2.5) - math.tanh(1.5)
    torch.testing.assert_close(att.score(q, k), torch.tensor([[[s1, s2]]]))
    w1 = math.exp(s1) / (math.exp(s1) + math.exp(s2))
    out, weights = att(q, k, v, return_weights=True)
    torch.testing.assert_close(weights, torch.tensor([[[w1, 1 - w1]]]))
    torch.testing.assert_close(out, torch.tensor([[[10 * w1 + 20 * (1 - w1)]]]))


def test_additive_score_matches_formula():
    att = AdditiveAttention(query_dim=3, key_dim=5, hidden_dim=7)
    q, k = torch.randn(B, TQ, 3), torch.randn(B, TK, 5)
    wq, wk, bk = att.query_proj.weight, att.key_proj.weight, att.key_proj.bias
    v = att.v.weight[0]
    expected = torch.empty(B, TQ, TK)
    for b in range(B):
        for i in range(TQ):
            for j in range(TK):
                expected[b, i, j] = v @ torch.tanh(wq @ q[b, i] + wk @ k[b, j] + bk)
    torch.testing.assert_close(att.score(q, k), expected, **TOL)


def test_dot_score_and_output():
    att = DotAttention()
    q, k, v = torch.randn(B, TQ, D), torch.randn(B, TK, D), torch.randn(B, TK, DV)
    scores = torch.einsum("bqd,bkd->bqk", q, k)
    torch.testing.assert_close(att.score(q, k), scores, **TOL)
    mask = padding_mask("fully_masked")
    assert_matches_explicit(att, q, k, v, scores, mask)


def test_dot_hand_computed():
    q = torch.tensor([[[1.0, 2.0]]])
    k = torch.tensor([[[3.0, 0.0], [1.0, 1.0]]])  # scores 3 and 3: equal weights
    out, weights = DotAttention()(q, k, return_weights=True)
    torch.testing.assert_close(weights, torch.tensor([[[0.5, 0.5]]]))
    torch.testing.assert_close(out, torch.tensor([[[2.0, 0.5]]]))  # value defaults to key


def test_general_score_and_output():
    att = GeneralAttention(query_dim=3, key_dim=5)
    q, k, v = torch.randn(B, TQ, 3), torch.randn(B, TK, 5), torch.randn(B, TK, DV)
    w = att.weight.weight  # (Dq, Dk)
    scores = torch.einsum("bqi,ij,bkj->bqk", q, w, k)
    torch.testing.assert_close(att.score(q, k), scores, **TOL)
    mask = padding_mask("padding")
    assert_matches_explicit(att, q, k, v, scores, mask)


def test_general_hand_computed():
    att = GeneralAttention(query_dim=1, key_dim=2)
    with torch.no_grad():
        att.weight.weight.copy_(torch.tensor([[2.0, -1.0]]))
    q = torch.tensor([[[3.0]]])
    k = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])  # W k = 1, -1; scores 3, -3
    torch.testing.assert_close(att.score(q, k), torch.tensor([[[3.0, -3.0]]]))


def test_scaled_dot_hand_computed():
    q = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])  # d = 4, √d = 2
    k = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0]]])  # scores 1, 0
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    w = math.e / (1 + math.e)
    expected = torch.tensor([[[w, 1 - w]]])
    for att in (ScaledDotProductAttention(), ScaledDotProductAttention(selection="softmax")):
        out, weights = att(q, k, v, return_weights=True)
        torch.testing.assert_close(weights, expected)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(att(q, k, v), expected)  # fused path


@pytest.mark.parametrize("mask_kind", ["none", "padding", "fully_masked"])
def test_scaled_dot_matches_explicit_formula(mask_kind):
    q, k, v = torch.randn(B, TQ, D), torch.randn(B, TK, D), torch.randn(B, TK, DV)
    mask = padding_mask(mask_kind)
    scores = torch.einsum("bqd,bkd->bqk", q, k) / math.sqrt(D)
    att = ScaledDotProductAttention()
    ref_out, ref_weights = assert_matches_explicit(att, q, k, v, scores, mask)
    torch.testing.assert_close(att(q, k, v, key_padding_mask=mask), ref_out, **TOL)
    ref_out4, ref_weights4 = sdpa_reference(q, k, v, None if mask is None else mask[:, None, :])
    torch.testing.assert_close(ref_out4, ref_out, **TOL)
    torch.testing.assert_close(ref_weights4, ref_weights, **TOL)


def test_sdpa_reference_custom_scale_and_head_axis():
    q, k, v = torch.randn(B, 2, TQ, D), torch.randn(B, 2, TK, D), torch.randn(B, 2, TK, DV)
    out, weights = sdpa_reference(q, k, v, scale=0.3)
    expected_w = torch.softmax(torch.einsum("bhqd,bhkd->bhqk", q, k) * 0.3, -1)
    torch.testing.assert_close(weights, expected_w, **TOL)
    torch.testing.assert_close(out, torch.einsum("bhqk,bhkv->bhqv", expected_w, v), **TOL)


def test_attention_mask_combines_padding_and_causal():
    pad = torch.tensor([[True, True, False], [False, True, True]])
    assert attention_mask(None, False, 2, 3, True) is None
    assert torch.equal(attention_mask(pad, False, 2, 3, False), pad[:, None, :])
    assert torch.equal(attention_mask(pad, False, 2, 3, True), pad[:, None, None, :])
    tri = torch.tensor([[True, False, False], [True, True, False]])  # top-left aligned
    assert torch.equal(attention_mask(None, True, 2, 3, True), tri)
    both = attention_mask(pad, True, 2, 3, True)
    assert both.shape == (2, 1, 2, 3)
    assert torch.equal(both, pad[:, None, None, :] & tri)


# --- fused == reference (ScaledDotProductAttention) ---------------------------------------------


def kv_inputs(kind: str, requires_grad: bool = True):
    q = torch.randn(B, TQ, D)
    if kind == "self":
        q = torch.randn(B, TK, D)
        k = v = q
    elif kind == "key_is_value":
        k = v = torch.randn(B, TK, D)
    else:
        k, v = torch.randn(B, TK, D), torch.randn(B, TK, DV)
    leaves = {id(t): t.requires_grad_(requires_grad) for t in (q, k, v)}
    return q, k, v, list(leaves.values())


@pytest.mark.parametrize("mask_kind", ["none", "padding", "fully_masked"])
@pytest.mark.parametrize("kv", ["self", "key_is_value", "key_ne_value"])
def test_scaled_dot_fused_equals_reference(kv, mask_kind):
    att = ScaledDotProductAttention()
    q, k, v, leaves = kv_inputs(kv)
    mask = padding_mask(mask_kind, keys=k.shape[1])
    fused = att(q, k, v, key_padding_mask=mask)
    g = torch.randn_like(fused)
    fused_grads = torch.autograd.grad((fused * g).sum(), leaves)
    ref, weights = att(q, k, v, key_padding_mask=mask, return_weights=True)
    ref_grads = torch.autograd.grad((ref * g).sum(), leaves)
    torch.testing.assert_close(fused, ref, **TOL)
    for a, b in zip(fused_grads, ref_grads, strict=True):
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
        torch.testing.assert_close(a, b, **TOL)
    if mask_kind == "fully_masked":
        assert (fused[1] == 0).all() and (ref[1] == 0).all() and (weights[1] == 0).all()
        for grad in fused_grads[1:]:  # keys / values of the sample with no key
            assert (grad[1] == 0).all()


def test_scaled_dot_gradcheck_reference():
    att = ScaledDotProductAttention()
    q = torch.randn(B, TQ, D, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, TK, D, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, TK, 3, dtype=torch.float64, requires_grad=True)
    mask = padding_mask("fully_masked")
    assert torch.autograd.gradcheck(
        lambda q, k, v: att(q, k, v, key_padding_mask=mask, return_weights=True), (q, k, v)
    )


def test_additive_gradcheck():
    att = AdditiveAttention(query_dim=3, key_dim=4, hidden_dim=5).double()
    q = torch.randn(B, TQ, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, TK, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, TK, 2, dtype=torch.float64, requires_grad=True)
    mask = padding_mask("fully_masked")
    assert torch.autograd.gradcheck(
        lambda q, k, v: att(q, k, v, key_padding_mask=mask, return_weights=True), (q, k, v)
    )


# --- single-query form --------------------------------------------------------------------------

SOFT_FACTORIES = {
    "additive": (lambda **kw: AdditiveAttention(3, D, 5, **kw), 3),
    "dot": (lambda **kw: DotAttention(**kw), D),
    "general": (lambda **kw: GeneralAttention(3, D, **kw), 3),
    "scaled_dot": (lambda **kw: ScaledDotProductAttention(**kw), D),
}


@pytest.mark.parametrize("name", list(SOFT_FACTORIES))
@pytest.mark.parametrize("return_weights", [False, True])
def test_single_query_form(name, return_weights):
    factory, dq = SOFT_FACTORIES[name]
    att = factory()
    q, k, v = torch.randn(B, dq), torch.randn(B, TK, D), torch.randn(B, TK, DV)
    mask = padding_mask("fully_masked")
    single = att(q, k, v, key_padding_mask=mask, return_weights=return_weights)
    seq = att(q[:, None, :], k, v, key_padding_mask=mask, return_weights=return_weights)
    if return_weights:
        (out, weights), (seq_out, seq_weights) = single, seq
        assert weights.shape == (B, TK)
        torch.testing.assert_close(weights, seq_weights.squeeze(1))
    else:
        out, seq_out = single, seq
    assert out.shape == (B, DV)
    torch.testing.assert_close(out, seq_out.squeeze(1))


# --- dropout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOFT_FACTORIES))
def test_dropout_eval_has_no_effect(name):
    factory, dq = SOFT_FACTORIES[name]
    torch.manual_seed(1)
    att = factory(dropout=0.5).eval()
    torch.manual_seed(1)
    plain = factory().eval()
    q, k, v = torch.randn(B, TQ, dq), torch.randn(B, TK, D), torch.randn(B, TK, DV)
    mask = padding_mask("padding")
    ref, weights = att(q, k, v, key_padding_mask=mask, return_weights=True)
    torch.testing.assert_close(ref, torch.einsum("bqk,bkv->bqv", weights, v), **TOL)
    torch.testing.assert_close(att(q, k, v, key_padding_mask=mask), ref, **TOL)  # fused if any
    torch.testing.assert_close(plain(q, k, v, key_padding_mask=mask), ref, **TOL)


@pytest.mark.parametrize("name", list(SOFT_FACTORIES))
def test_dropout_train_returns_pre_dropout_weights(name):
    factory, dq = SOFT_FACTORIES[name]
    att = factory(dropout=0.5).train()
    q, k, v = torch.randn(4, TQ, dq), torch.randn(4, TK, D), torch.randn(4, TK, DV)
    out, weights = att(q, k, v, return_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, TQ))
    assert (out - torch.einsum("bqk,bkv->bqv", weights, v)).abs().max() > 1e-2  # dropout applied
    fused = att(q, k, v)
    assert (fused - att.eval()(q, k, v)).abs().max() > 1e-2


# --- constructor and forward errors -------------------------------------------------------------

ALL_SOFT = [
    lambda **kw: AdditiveAttention(3, 4, 5, **kw),
    lambda **kw: DotAttention(**kw),
    lambda **kw: GeneralAttention(3, 4, **kw),
    lambda **kw: ScaledDotProductAttention(**kw),
]


@pytest.mark.parametrize("factory", ALL_SOFT)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dropout": -0.1}, "dropout=-0.1"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"selection": "hardmax"}, "selection='hardmax'"),
        ({"selection": "topk"}, "top_k=None"),
        ({"selection": "topk", "top_k": 0}, "top_k=0"),
        ({"top_k": 3}, "top_k=3"),
        ({"selection": "gumbel", "tau": 0.0}, "tau=0.0"),
        ({"selection": "gumbel", "tau": -2.0}, "tau=-2.0"),
    ],
)
def test_soft_constructor_rejects(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: AdditiveAttention(0, 4, 5), "query_dim=0"),
        (lambda: AdditiveAttention(3, -1, 5), "key_dim=-1"),
        (lambda: AdditiveAttention(3, 4, 0), "hidden_dim=0"),
        (lambda: GeneralAttention(-3, 4), "query_dim=-3"),
        (lambda: GeneralAttention(3, 0), "key_dim=0"),
    ],
)
def test_soft_constructor_rejects_sizes(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("name", list(SOFT_FACTORIES))
@pytest.mark.parametrize("return_weights", [False, True])
def test_soft_forward_shape_errors(name, return_weights):
    factory, dq = SOFT_FACTORIES[name]
    att = factory()
    q, k, v = torch.randn(B, TQ, dq), torch.randn(B, TK, D), torch.randn(B, TK, DV)
    kw = {"return_weights": return_weights}
    with pytest.raises(ValueError, match="key_padding_mask"):
        att(q, k, v, key_padding_mask=torch.ones(B, TK), **kw)  # float, not bool
    with pytest.raises(ValueError, match="key_padding_mask"):
        att(q, k, v, key_padding_mask=torch.ones(B, TK + 1, dtype=torch.bool), **kw)
    with pytest.raises(ValueError, match="key_padding_mask"):
        att(q, k, v, key_padding_mask=torch.ones(B, 1, TK, dtype=torch.bool), **kw)
    with pytest.raises(ValueError, match="value"):
        att(q, k, torch.randn(B, TK + 1, DV), **kw)
    with pytest.raises(ValueError, match="query"):
        att(torch.randn(B, 1, TQ, dq), k, v, **kw)
    with pytest.raises(ValueError, match="query"):  # batch sizes differ: no silent broadcast
        att(q[:1], k, v, **kw)
    with pytest.raises(ValueError, match="query"):
        att(q[:1, 0], k, v, **kw)


@pytest.mark.parametrize("cls", [DotAttention, ScaledDotProductAttention])
@pytest.mark.parametrize("return_weights", [False, True])
def test_dot_products_need_equal_sizes(cls, return_weights):
    with pytest.raises(ValueError, match="query size 3 != key size 4"):
        cls()(torch.randn(B, TQ, 3), torch.randn(B, TK, 4), return_weights=return_weights)


# --- hard selections through the modules --------------------------------------------------------


@pytest.mark.parametrize("name", list(SOFT_FACTORIES))
def test_hard_selection_output_is_selected_values(name):
    factory, dq = SOFT_FACTORIES[name]
    q, k, v = torch.randn(B, TQ, dq), torch.randn(B, TK, D), torch.randn(B, TK, DV)
    torch.manual_seed(2)
    soft = factory()
    torch.manual_seed(2)
    hard = factory(selection="argmax")
    torch.manual_seed(2)
    top = factory(selection="topk", top_k=2)
    _, soft_w = soft(q, k, v, return_weights=True)
    out, weights = hard(q, k, v, return_weights=True)
    best = soft_w.argmax(-1)  # same scorer parameters: argmax of the softmax
    torch.testing.assert_close(weights, F.one_hot(best, TK).float())
    torch.testing.assert_close(out, torch.stack([v[b, best[b]] for b in range(B)]), **TOL)
    torch.testing.assert_close(hard(q, k, v), out)  # no weights asked: same (reference) path
    top_out, top_w = top(q, k, v, return_weights=True)
    assert ((top_w > 0).sum(-1) == 2).all()
    torch.testing.assert_close(top(q, k, v), top_out)
