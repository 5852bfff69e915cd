"""Multiplicative attention scores (Luong, Pham & Manning, "Effective Approaches to
Attention-based Neural Machine Translation", EMNLP 2015): ``dot`` = qᵀk and ``general`` = qᵀWk.

Axes: B batch, Tq queries, Tk keys, Dq/Dk query/key features.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnmtl.attention.base import SoftAttention


class DotAttention(SoftAttention):
    """Luong's ``dot`` score qᵀk, without scaling; queries and keys must have one size."""

    def score(self, query: Tensor, key: Tensor) -> Tensor:
        if query.shape[-1] != key.shape[-1]:
            raise ValueError(
                f"query size {query.shape[-1]} != key size {key.shape[-1]}; dot attention needs "
                "equal sizes (use GeneralAttention or AdditiveAttention otherwise)"
            )
        return query @ key.transpose(-2, -1)  # (B, Tq, Tk)


class GeneralAttention(SoftAttention):
    """Luong's ``general`` score qᵀWk with a learned W (Dq × Dk).

    Args:
        query_dim: size of each query vector.
        key_dim: size of each key vector.
        dropout, selection, top_k, tau: see :class:`~attnmtl.attention.base.SoftAttention`.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        dropout: float = 0.0,
        selection: str = "softmax",
        top_k: int | None = None,
        tau: float = 1.0,
    ) -> None:
        for name, value in (("query_dim", query_dim), ("key_dim", key_dim)):
            if value < 1:
                raise ValueError(f"{name}={value!r}; expected a size >= 1")
        super().__init__(dropout, selection, top_k, tau)
        self.weight = nn.Linear(key_dim, query_dim, bias=False)  # W k

    def score(self, query: Tensor, key: Tensor) -> Tensor:
        return query @ self.weight(key).transpose(-2, -1)  # (B, Tq, Tk)
