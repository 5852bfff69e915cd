"""Multi-head attention: reference path against an explicit implementation, fused == reference,
causal and padding masks, gradients, dropout, hard selections and argument checks."""

import math

import pytest
import torch

from attnmtl.attention import MultiHeadAttention

B, TQ, TK, D, H = 2, 3, 5, 8, 2
KDIM, VDIM = 6, 5
TOL = {"atol": 1e-5, "rtol": 1e-5}


def explicit_mha(mha, query, key, value, allowed=None):
    """Multi-head attention written out head by head from the module's weights.

    ``allowed`` (B, Tq, Tk) is True where query i may see key j. Returns output (B, Tq, D) and
    weights (B, H, Tq, Tk); a query that sees no key gets zero weights.
    """
    d_model, heads = mha.embed_dim, mha.num_heads
    d = d_model // heads
    if mha.packed:
        wq, wk, wv = mha.in_proj.weight.chunk(3)
        biases = (None,) * 3 if mha.in_proj.bias is None else mha.in_proj.bias.chunk(3)
    else:
        wq, wk, wv = mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight
        biases = tuple(
            None if p.bias is None else p.bias for p in (mha.q_proj, mha.k_proj, mha.v_proj)
        )
    q, k, v = (
        x @ w.T + (0 if b is None else b)
        for x, w, b in zip((query, key, value), (wq, wk, wv), biases, strict=True)
    )
    outs, weights = [], []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        scores = torch.einsum("bqd,bkd->bqk", q[..., sl], k[..., sl]) / math.sqrt(d)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        w = torch.nan_to_num(torch.softmax(scores, -1), nan=0.0)
        weights.append(w)
        outs.append(torch.einsum("bqk,bkd->bqd", w, v[..., sl]))
    concat = torch.cat(outs, -1)
    out = concat @ mha.out_proj.weight.T
    if mha.out_proj.bias is not None:
        out = out + mha.out_proj.bias
    return out, torch.stack(weights, 1)


def allowed_mask(pad, causal, tq, tk, batch=B):
    allowed = torch.ones(batch, tq, tk, dtype=torch.bool)
    if pad is not None:
        allowed = allowed & pad[:, None, :]
    if causal:
        allowed = allowed & torch.ones(tq, tk, dtype=torch.bool).tril()
    return allowed


def make_inputs(kv: str, dtype=torch.float32):
    """query, key, value (with key/value None for self-attention) and the distinct leaves."""
    if kv == "self":
        q = torch.randn(B, TK, D, dtype=dtype, requires_grad=True)
        return q, None, None, [q]
    q = torch.randn(B, TQ, D, dtype=dtype, requires_grad=True)
    if kv == "key_is_value":
        k = torch.randn(B, TK, D, dtype=dtype, requires_grad=True)
        return q, k, k, [q, k]
    kd, vd = (KDIM, VDIM) if kv == "kdim_vdim" else (D, D)
    k = torch.randn(B, TK, kd, dtype=dtype, requires_grad=True)
    v = torch.randn(B, TK, vd, dtype=dtype, requires_grad=True)
    return q, k, v, [q, k, v]


def make_mha(kv: str, **kw):
    if kv == "kdim_vdim":
        return MultiHeadAttention(D, H, kdim=KDIM, vdim=VDIM, **kw)
    return MultiHeadAttention(D, H, **kw)


def make_pad(kind: str):
    if kind == "none":
        return None
    pad = torch.ones(B, TK, dtype=torch.bool)
    pad[0, 1] = False
    pad[0, -1] = False
    if kind == "fully_masked":
        pad[1] = False
    if kind == "first_key_masked":  # with causal, query 0 of sample 1 sees no key
        pad[1, 0] = False
    return pad


KV_KINDS = ["self", "key_is_value", "key_ne_value", "kdim_vdim"]
PAD_KINDS = ["none", "padding", "fully_masked", "first_key_masked"]


# --- reference path against an explicit implementation ------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pad_kind", PAD_KINDS)
@pytest.mark.parametrize("kv", KV_KINDS)
def test_reference_matches_explicit(kv, pad_kind, causal, bias):
    mha = make_mha(kv, bias=bias)
    q, k, v, _ = make_inputs(kv)
    pad = make_pad(pad_kind)
    out, weights = mha(q, k, v, key_padding_mask=pad, causal=causal, return_weights=True)
    key = q if k is None else k
    value = key if v is None else v
    allowed = allowed_mask(pad, causal, q.shape[1], key.shape[1])
    ref_out, ref_weights = explicit_mha(mha, q, key, value, allowed)
    assert weights.shape == (B, H, q.shape[1], key.shape[1])
    torch.testing.assert_close(weights, ref_weights, **TOL)
    torch.testing.assert_close(out, ref_out, **TOL)
    assert (weights.masked_select(~allowed[:, None]) == 0).all()


# --- fused == reference -------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pad_kind", PAD_KINDS)
@pytest.mark.parametrize("kv", KV_KINDS)
def test_fused_equals_reference_with_gradients(kv, pad_kind, causal):
    mha = make_mha(kv)
    q, k, v, leaves = make_inputs(kv)
    pad = make_pad(pad_kind)
    params = list(mha.parameters())
    fused = mha(q, k, v, key_padding_mask=pad, causal=causal)
    g = torch.randn_like(fused)
    fused_grads = torch.autograd.grad((fused * g).sum(), leaves + params)
    ref, _ = mha(q, k, v, key_padding_mask=pad, causal=causal, return_weights=True)
    ref_grads = torch.autograd.grad((ref * g).sum(), leaves + params)
    torch.testing.assert_close(fused, ref, **TOL)
    for a, b in zip(fused_grads, ref_grads, strict=True):
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_fully_masked_rows_give_zero(causal):
    mha = MultiHeadAttention(D, H, bias=False)
    q = torch.randn(B, TK, D, requires_grad=True)
    pad = make_pad("fully_masked")
    fused = mha(q, key_padding_mask=pad, causal=causal)
    ref, weights = mha(q, key_padding_mask=pad, causal=causal, return_weights=True)
    for out in (fused, ref):
        assert (out[1] == 0).all()
        assert torch.isfinite(out).all()
        (grad,) = torch.autograd.grad(out.square().sum(), q)
        assert torch.isfinite(grad).all()
        assert (grad[1] == 0).all()
    assert (weights[1] == 0).all()
    # with biases, the attention output is zero and the output is the out-projection's bias
    mha_b = MultiHeadAttention(D, H)
    for return_weights in (False, True):
        out = mha_b(q, key_padding_mask=pad, return_weights=return_weights)
        out = out[0] if return_weights else out
        torch.testing.assert_close(out[1], mha_b.out_proj.bias.expand(TK, D))


# --- causal masking -----------------------------------------------------------------------------


@pytest.mark.parametrize("return_weights", [False, True])
def test_causal_query_never_sees_later_keys(return_weights):
    mha = MultiHeadAttention(D, H)
    x = torch.randn(B, TK, D)
    out = mha(x, causal=True, return_weights=return_weights)
    out = out[0] if return_weights else out
    for i in range(TK - 1):
        changed = x.clone()
        changed[:, i + 1 :] = torch.randn(B, TK - i - 1, D)
        new = mha(changed, causal=True, return_weights=return_weights)
        new = new[0] if return_weights else new
        torch.testing.assert_close(new[:, : i + 1], out[:, : i + 1], atol=1e-6, rtol=1e-6)
        assert (new[:, i + 1 :] - out[:, i + 1 :]).abs().max() > 1e-2
    _, weights = mha(x, causal=True, return_weights=True)
    upper = torch.ones(TK, TK, dtype=torch.bool).triu(1)
    assert (weights[..., upper] == 0).all()
    assert (weights[..., ~upper] > 0).all()
    assert (weights[..., 0, 0] == 1).all()  # the first query sees only itself


@pytest.mark.parametrize(("tq", "tk"), [(3, 5), (5, 3)])
def test_causal_cross_attention_is_top_left_aligned(tq, tk):
    mha = MultiHeadAttention(D, H)
    q, mem = torch.randn(B, tq, D), torch.randn(B, tk, D)
    fused = mha(q, mem, causal=True)
    ref, weights = mha(q, mem, causal=True, return_weights=True)
    torch.testing.assert_close(fused, ref, **TOL)
    visible = (weights > 0).all(0).all(0)  # (tq, tk)
    assert torch.equal(visible, torch.ones(tq, tk, dtype=torch.bool).tril())


# --- projection branches ------------------------------------------------------------------------


@pytest.mark.parametrize("return_weights", [False, True])
def test_packed_projection_branches_agree(return_weights):
    mha = MultiHeadAttention(D, H)
    x = torch.randn(B, TK, D)

    def run(*args):
        out = mha(*args, return_weights=return_weights)
        return out[0] if return_weights else out

    one_matmul = run(x)  # query is key is value
    torch.testing.assert_close(run(x, x, x), one_matmul)
    torch.testing.assert_close(run(x, x.clone()), one_matmul, **TOL)  # key is value
    torch.testing.assert_close(run(x, x.clone(), x.clone()), one_matmul, **TOL)  # all distinct


def test_kdim_vdim_uses_separate_projections():
    mha = MultiHeadAttention(D, H, kdim=KDIM, vdim=VDIM)
    assert not hasattr(mha, "in_proj")
    assert mha.q_proj.weight.shape == (D, D)
    assert mha.k_proj.weight.shape == (D, KDIM)
    assert mha.v_proj.weight.shape == (D, VDIM)
    packed = MultiHeadAttention(D, H)
    assert packed.in_proj.weight.shape == (3 * D, D)
    assert not hasattr(packed, "q_proj")


# --- gradcheck ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kv", ["self", "kdim_vdim"])
def test_reference_gradcheck(kv):
    mha = make_mha(kv).double()
    *_, leaves = make_inputs(kv, dtype=torch.float64)
    pad = make_pad("first_key_masked")
    pad[0] = False

    def f(*inputs):
        query = inputs[0]
        key, value = (None, None) if kv == "self" else inputs[1:]
        out, weights = mha(
            query, key, value, key_padding_mask=pad, causal=True, return_weights=True
        )
        return out, weights

    assert torch.autograd.gradcheck(f, tuple(leaves))


# --- dropout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kv", ["self", "key_ne_value"])
def test_dropout_eval_no_effect(kv):
    mha = make_mha(kv, dropout=0.5).eval()
    q, k, v, _ = make_inputs(kv)
    pad = make_pad("padding")
    fused = mha(q, k, v, key_padding_mask=pad, causal=True)
    ref, _ = mha(q, k, v, key_padding_mask=pad, causal=True, return_weights=True)
    torch.testing.assert_close(fused, ref, **TOL)
    torch.testing.assert_close(mha(q, k, v, key_padding_mask=pad, causal=True), fused)


def test_dropout_train_returns_pre_dropout_weights():
    mha = MultiHeadAttention(D, H, dropout=0.5)
    x = torch.randn(4, TK, D)
    pad = torch.ones(4, TK, dtype=torch.bool)
    pad[0, 2:] = False
    eval_out = mha.eval()(x, key_padding_mask=pad)
    mha.train()
    out, weights = mha(x, key_padding_mask=pad, return_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, H, TK))
    assert (weights[0, ..., 2:] == 0).all()
    assert (out - eval_out).abs().max() > 1e-2  # dropout acts in training (reference path)
    fused = mha(x, key_padding_mask=pad)
    assert (fused - eval_out).abs().max() > 1e-2  # and in the fused path


# --- hard selections ----------------------------------------------------------------------------


def test_topk_selection_keeps_k_keys_per_head():
    mha = MultiHeadAttention(D, H, selection="topk", top_k=2)
    x = torch.randn(B, TK, D)
    pad = make_pad("padding")
    out, weights = mha(x, key_padding_mask=pad, causal=True, return_weights=True)
    allowed = allowed_mask(pad, True, TK, TK)[:, None].expand_as(weights)
    n_valid = allowed.sum(-1)
    assert torch.equal((weights > 0).sum(-1), n_valid.clamp(max=2))
    assert (weights[~allowed] == 0).all()
    torch.testing.assert_close(mha(x, key_padding_mask=pad, causal=True), out)


@pytest.mark.parametrize("selection", ["argmax", "gumbel"])
def test_one_hot_selections_in_eval(selection):
    mha = MultiHeadAttention(D, H, selection=selection).eval()
    soft = MultiHeadAttention(D, H)
    soft.load_state_dict(mha.state_dict())
    x = torch.randn(B, TK, D)
    out, weights = mha(x, return_weights=True)
    _, soft_w = soft(x, return_weights=True)
    torch.testing.assert_close(weights, torch.nn.functional.one_hot(soft_w.argmax(-1), TK).float())
    torch.testing.assert_close(mha(x, return_weights=True)[0], out)  # deterministic
    torch.testing.assert_close(mha(x), out)


# --- argument checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embed_dim": 10, "num_heads": 3}, "num_heads=3"),
        ({"embed_dim": 0, "num_heads": 1}, "embed_dim=0"),
        ({"embed_dim": -8, "num_heads": 2}, "embed_dim=-8"),
        ({"embed_dim": 8, "num_heads": 0}, "num_heads=0"),
        ({"embed_dim": 8, "num_heads": -2}, "num_heads=-2"),
        ({"embed_dim": 8, "num_heads": 2, "kdim": 0}, "kdim=0"),
        ({"embed_dim": 8, "num_heads": 2, "vdim": -1}, "vdim=-1"),
        ({"embed_dim": 8, "num_heads": 2, "dropout": 1.0}, "dropout=1.0"),
        ({"embed_dim": 8, "num_heads": 2, "dropout": -0.5}, "dropout=-0.5"),
        ({"embed_dim": 8, "num_heads": 2, "selection": "max"}, "selection='max'"),
        ({"embed_dim": 8, "num_heads": 2, "selection": "topk"}, "top_k=None"),
        ({"embed_dim": 8, "num_heads": 2, "top_k": 2}, "top_k=2"),
        ({"embed_dim": 8, "num_heads": 2, "selection": "gumbel", "tau": 0.0}, "tau=0.0"),
    ],
)
def test_constructor_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**kwargs)


@pytest.mark.parametrize("return_weights", [False, True])
def test_forward_shape_errors(return_weights):
    mha = MultiHeadAttention(D, H)
    x = torch.randn(B, TK, D)
    kw = {"return_weights": return_weights}
    with pytest.raises(ValueError, match="key_padding_mask"):
        mha(x, key_padding_mask=torch.ones(B, TK, dtype=torch.long), **kw)
    with pytest.raises(ValueError, match="key_padding_mask"):
        mha(x, key_padding_mask=torch.ones(B, TK - 1, dtype=torch.bool), **kw)
    with pytest.raises(ValueError, match="key_padding_mask"):
        mha(x, key_padding_mask=torch.ones(B + 1, TK, dtype=torch.bool), **kw)
    with pytest.raises(ValueError, match="query"):
        mha(x[0], **kw)
    with pytest.raises(ValueError, match="value"):
        mha(x, x, torch.randn(B, TK + 1, D), **kw)
    with pytest.raises(ValueError, match="query"):  # batch sizes differ
        mha(x[:1], x, **kw)
