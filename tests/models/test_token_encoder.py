"""Token-id inputs (B, T) through the shared encoder: the transformer embeds them."""

from __future__ import annotations

import pytest
import torch

from attnmtl.models import build_encoder


def test_token_ids_reach_an_embedding_and_padding_is_masked() -> None:
    enc = build_encoder("transformer", (6,), "sequence", vocab_size=50, padding_idx=0, dim=8)
    ids = torch.tensor([[5, 7, 9, 0, 0, 0], [3, 4, 5, 6, 7, 8]])
    out = enc(ids, torch.tensor([3, 6]))
    assert out.sequence.shape == (2, 6, 8)
    assert out.mask is not None and out.mask.tolist()[0] == [True] * 3 + [False] * 3
    # the padded tail of sample 0 does not change its pooled vector
    enc.eval()
    a = enc(ids, torch.tensor([3, 6])).pooled
    b = enc(torch.tensor([[5, 7, 9, 11, 12, 13], [3, 4, 5, 6, 7, 8]]), torch.tensor([3, 6])).pooled
    torch.testing.assert_close(a, b)


def test_token_ids_need_a_transformer() -> None:
    with pytest.raises(ValueError, match="expected encoder 'transformer'"):
        build_encoder("rnn", (6,), "sequence", vocab_size=50)
