"""Attention modules: soft scorers, multi-head attention, pooling, hard selections, spatial and
channel attention. Pure ``nn.Module``s, usable in any training loop.

Every normalised attention here follows one convention: a boolean mask with True = the key takes
part, masked keys at exactly zero weight, rows summing to one, and a row with no key at all
getting zero weights and a zero output (never NaN).
"""

from attnmtl.attention.additive import AdditiveAttention
from attnmtl.attention.base import SoftAttention
from attnmtl.attention.channel import ChannelAttention
from attnmtl.attention.luong import DotAttention, GeneralAttention
from attnmtl.attention.multihead import MultiHeadAttention
from attnmtl.attention.pooling import AttentionPooling
from attnmtl.attention.scaled_dot import ScaledDotProductAttention, attention_mask, sdpa_reference
from attnmtl.attention.selection import (
    SELECTIONS,
    Selection,
    argmax_st,
    gumbel_softmax_st,
    masked_softmax,
    topk_softmax,
)
from attnmtl.attention.spatial import SpatialAttention

__all__ = [
    "SELECTIONS",
    "AdditiveAttention",
    "AttentionPooling",
    "ChannelAttention",
    "DotAttention",
    "GeneralAttention",
    "MultiHeadAttention",
    "ScaledDotProductAttention",
    "Selection",
    "SoftAttention",
    "SpatialAttention",
    "argmax_st",
    "attention_mask",
    "gumbel_softmax_st",
    "masked_softmax",
    "sdpa_reference",
    "topk_softmax",
]
