"""Additive attention (Bahdanau, Cho & Bengio, "Neural Machine Translation by Jointly Learning
to Align and Translate", ICLR 2015): ``score(q, k) = vᵀ tanh(W_q q + W_k k)``.

Axes: B batch, Tq queries, Tk keys, A the hidden size of the scoring MLP.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnmtl.attention.base import SoftAttention


class AdditiveAttention(SoftAttention):
    """Bahdanau's additive scorer; works for queries and keys of different sizes.

    Args:
        query_dim: size of each query vector.
        key_dim: size of each key vector.
        hidden_dim: size A of the scoring MLP.
        dropout, selection, top_k, tau: see :class:`~attnmtl.attention.base.SoftAttention`.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        hidden_dim: int,
        dropout: float = 0.0,
        selection: str = "softmax",
        top_k: int | None = None,
        tau: float = 1.0,
    ) -> None:
        for name, value in (
            ("query_dim", query_dim),
            ("key_dim", key_dim),
            ("hidden_dim", hidden_dim),
        ):
            if value < 1:
                raise ValueError(f"{name}={value!r}; expected a size >= 1")
        super().__init__(dropout, selection, top_k, tau)
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim)
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def score(self, query: Tensor, key: Tensor) -> Tensor:
        q = self.query_proj(query).unsqueeze(2)  # (B, Tq, 1, A)
        k = self.key_proj(key).unsqueeze(1)  # (B, 1, Tk, A)
        return self.v((q + k).tanh()).squeeze(-1)  # (B, Tq, Tk)
