"""Scaled dot-product attention (Vaswani et al., "Attention Is All You Need", NeurIPS 2017):
``softmax(Q Kᵀ / √d) V``, with a fused path and an explicit reference path.

Axes: B batch, H heads, Tq queries, Tk keys, d key/query size, Dv value size; ``...`` any
leading batch axes.

The fused path is :func:`torch.nn.functional.scaled_dot_product_attention` (flash or
memory-efficient kernels: memory linear in T, no weights). The reference path computes the same
maths explicitly and is the only way to obtain the weights or to use a hard selection; tests hold
the two equal. Boolean masks follow SDPA's convention: True = the key takes part.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnmtl.attention.base import SoftAttention
from attnmtl.attention.selection import Selection

SOFTMAX = Selection()


def attention_mask(
    key_padding_mask: Tensor | None,
    causal: bool,
    tq: int,
    tk: int,
    head_axis: bool,
    device: torch.device | None = None,
) -> Tensor | None:
    """Combine a (B, Tk) key-padding mask and a causal mask into one boolean mask.

    Returns None when neither is given, else a mask broadcastable to the scores:
    (B, [1,] 1|Tq, Tk) with the singleton head axis when ``head_axis``.
    Causal masking lets query i see keys 0..i (top-left aligned, as SDPA's ``is_causal``).
    """
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, None, :] if head_axis else key_padding_mask[:, None, :]
    if causal:
        tri = torch.ones(tq, tk, dtype=torch.bool, device=device).tril()  # (Tq, Tk)
        mask = tri if mask is None else mask & tri
    return mask


def sdpa_reference(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
    selection: Selection = SOFTMAX,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Explicit scaled dot-product attention: returns (output (..., Tq, Dv), weights (..., Tq, Tk)).

    The weights are those before dropout. A row whose every key is masked gets zero weights and a
    zero output, as the fused kernel gives.
    """
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale  # (..., Tq, Tk)
    weights = selection(scores, mask, training)
    dropped = F.dropout(weights, dropout_p, training) if dropout_p else weights
    return dropped @ value, weights


class ScaledDotProductAttention(SoftAttention):
    """Single-head scaled dot-product attention (no projections) over given q, k, v.

    Uses the fused kernel when no weights are asked for and the selection is softmax; the
    reference path otherwise.
    """

    def score(self, query: Tensor, key: Tensor) -> Tensor:
        if query.shape[-1] != key.shape[-1]:
            raise ValueError(
                f"query size {query.shape[-1]} != key size {key.shape[-1]}; "
                "scaled dot-product attention needs equal sizes"
            )
        return (query @ key.transpose(-2, -1)) / math.sqrt(query.shape[-1])  # (B, Tq, Tk)

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        if need_weights or not self.select.is_softmax:
            return super().attend(query, key, value, mask, need_weights)
        if query.shape[-1] != key.shape[-1]:
            self.score(query, key)  # raises the reference path's error
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=p)
        return out, None
