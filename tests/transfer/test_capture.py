"""Capture: attention, activations and q/k/v read by module path, outputs left unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnmtl.attention import AttentionPooling, MultiHeadAttention
from attnmtl.encoders import TransformerEncoder
from attnmtl.transfer.capture import QKV, Capture, check_eager, find_module


def test_attention_weights_captured_and_output_unchanged() -> None:
    torch.manual_seed(0)
    enc = TransformerEncoder(input_dim=3, dim=8, num_layers=2, num_heads=2, dropout=0.0)
    x = torch.randn(4, 5, 3)
    lengths = torch.tensor([5, 3, 4, 1])
    reference = enc(x, lengths, return_layer_weights=True)
    with Capture(enc, ["layers.0.attn", "layers.1.attn"]) as cap:
        out = enc(x, lengths)  # the caller does not ask for weights
        w1 = cap.get("layers.1.attn")
    assert isinstance(out.pooled, torch.Tensor)
    torch.testing.assert_close(out.sequence, reference.sequence)
    assert reference.layer_attention is not None
    torch.testing.assert_close(w1, reference.layer_attention[1])
    assert w1.shape == (4, 2, 5, 5)
    assert float(w1[1, :, :3, 3:].detach().abs().max()) == 0.0  # padded keys get no weight
    # hooks removed on exit: a later call records nothing new
    enc(x, lengths)
    assert len(cap.records["layers.1.attn"]) == 1


def test_caller_asking_for_weights_still_gets_them() -> None:
    pool = AttentionPooling(6)
    x = torch.randn(2, 4, 6)
    with Capture(pool, {"pool": ""}) as cap:
        pooled, weights = pool(x, return_weights=True)
        torch.testing.assert_close(cap.get("pool"), weights)
        only = pool(x)
    assert isinstance(only, torch.Tensor)
    torch.testing.assert_close(only, pooled)


def test_activation_and_inactive_capture() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    cap = Capture(net, ["1"], kind="activation")
    net(x)
    torch.testing.assert_close(cap.get("1"), torch.relu(net[0](x)))
    cap.clear()
    cap.active = False
    net(x)
    with pytest.raises(ValueError, match="did not run"):
        cap.get("1")
    cap.close()


def test_qkv_of_packed_self_attention_matches_projection() -> None:
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(3, 4, 8)
    with Capture(mha, {"a": ""}, kind="qkv") as cap:
        mha(x)
        rec = cap.get("a")
    assert isinstance(rec, QKV) and rec.num_heads == 2
    q, _, v = mha.in_proj(x).chunk(3, -1)
    torch.testing.assert_close(rec.q, q)
    torch.testing.assert_close(rec.v, v)


def test_bad_paths_and_kinds_are_one_line_errors() -> None:
    enc = TransformerEncoder(input_dim=3, dim=8, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match=r"did you mean layers\.0\.attn"):
        find_module(enc, "layers.0.atn")
    with pytest.raises(ValueError, match="capture kind"):
        Capture(enc, ["layers.0.attn"], kind="weights")
    cap = Capture(enc, ["layers.0.ff"])
    with pytest.raises(ValueError, match="returned no attention weights"):
        enc(torch.randn(1, 2, 3))
    cap.close()
    with pytest.raises(ValueError, match="not a self-attention module"):
        Capture(enc, ["layers.0.ff"], kind="qkv")


def test_non_eager_hugging_face_model_is_named() -> None:
    class Config:
        _attn_implementation = "sdpa"

    model = nn.Linear(2, 2)
    model.config = Config()  # type: ignore[assignment]
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        check_eager(model)
    with pytest.raises(ValueError, match="sdpa"):
        Capture(model, {"root": ""})
