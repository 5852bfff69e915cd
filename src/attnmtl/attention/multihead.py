"""Multi-head attention (Vaswani et al., "Attention Is All You Need", NeurIPS 2017).

Axes: B batch, Tq queries, Tk keys, D model width, H heads, d = D / H head width.

The fused path calls :func:`torch.nn.functional.scaled_dot_product_attention` (memory linear in T)
whenever the weights are not asked for; the reference path (:func:`sdpa_reference`) computes the
same explicitly and returns the weights (B, H, Tq, Tk). As in timm and nanoGPT, self-attention
projects q, k and v with one packed matmul.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnmtl.attention.base import check_dropout, check_key_padding_mask, check_qkv
from attnmtl.attention.scaled_dot import attention_mask, sdpa_reference
from attnmtl.attention.selection import Selection


class MultiHeadAttention(nn.Module):
    """Multi-head self or cross attention with key-padding masks and optional weights.

    Args:
        embed_dim: model width D (queries and outputs).
        num_heads: number of heads H; must divide ``embed_dim``.
        dropout: attention-dropout probability (on the weights, training only).
        bias: whether the projections have biases.
        kdim: key width (default D); keys are projected to D.
        vdim: value width (default D); values are projected to D.
        selection, top_k, tau: how scores become weights (see
            :class:`~attnmtl.attention.selection.Selection`); a hard selection always takes the
            reference path.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        selection: str = "softmax",
        top_k: int | None = None,
        tau: float = 1.0,
    ) -> None:
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(
                f"embed_dim={embed_dim!r}, num_heads={num_heads!r}; expected positive sizes with "
                "num_heads dividing embed_dim"
            )
        kdim = embed_dim if kdim is None else kdim
        vdim = embed_dim if vdim is None else vdim
        if kdim < 1 or vdim < 1:
            raise ValueError(f"kdim={kdim!r}, vdim={vdim!r}; expected sizes >= 1")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim, vdim
        self.dropout = check_dropout(dropout)
        self.select = Selection(selection, top_k, tau)
        self.packed = kdim == embed_dim and vdim == embed_dim
        if self.packed:
            self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)  # [W_q; W_k; W_v]
        else:
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.k_proj = nn.Linear(kdim, embed_dim, bias=bias)
            self.v_proj = nn.Linear(vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, Tq, D), k (B, Tk, D) and v (B, Tk, D), in as few matmuls as possible."""
        if not self.packed:
            return self.q_proj(query), self.k_proj(key), self.v_proj(value)
        d = self.embed_dim
        w, b = self.in_proj.weight, self.in_proj.bias
        if query is key and key is value:  # self-attention: one (B, T, 3D) matmul
            q, k, v = self.in_proj(query).split(d, dim=-1)
            return q, k, v
        q = F.linear(query, w[:d], None if b is None else b[:d])
        if key is value:  # cross-attention over one memory: one (B, Tk, 2D) matmul
            k, v = F.linear(key, w[d:], None if b is None else b[d:]).split(d, dim=-1)
            return q, k, v
        k = F.linear(key, w[d : 2 * d], None if b is None else b[d : 2 * d])
        v = F.linear(value, w[2 * d :], None if b is None else b[2 * d :])
        return q, k, v

    def _heads(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, H, T, d)."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from ``query`` (B, Tq, D) to ``key``/``value`` (default: the query itself).

        Args:
            key_padding_mask: boolean (B, Tk), True = real token; padded keys get zero weight.
            causal: query i sees keys 0..i only (top-left aligned).
            return_weights: also return the weights (B, H, Tq, Tk), taking the reference path.

        A query row that sees no key at all gets zero weights and a zero attention output.
        """
        key = query if key is None else key
        value = key if value is None else value
        check_qkv(query, key, value, "(B, Tq, D), (B, Tk, kdim) and (B, Tk, vdim)")
        batch, tq, tk = query.shape[0], query.shape[1], key.shape[1]
        check_key_padding_mask(key_padding_mask, batch, tk)
        q, k, v = (self._heads(t) for t in self._project(query, key, value))  # (B, H, T, d)
        p = self.dropout if self.training else 0.0
        weights = None
        if return_weights or not self.select.is_softmax:
            mask = attention_mask(key_padding_mask, causal, tq, tk, True, query.device)
            out, weights = sdpa_reference(q, k, v, mask, p, self.training, self.select)
        elif key_padding_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        else:
            mask = attention_mask(key_padding_mask, causal, tq, tk, True, query.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, tq, self.embed_dim))  # (B, Tq, D)
        if return_weights:
            assert weights is not None
            return out, weights
        return out
