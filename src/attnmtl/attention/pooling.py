"""Attention pooling: a learned score per time step, softmax over time, the weighted sum.

This is the seed note's ``AttnRNN`` scorer (a Linear scoring each step), made reusable. Options:

* ``hidden_dim``: score with a one-hidden-layer MLP ``uᵀ tanh(W x + b)`` as in hierarchical
  attention networks (Yang et al., NAACL 2016) instead of a single Linear;
* ``num_queries`` Q > 1: Q learned scorers ("hops") pool Q vectors, as the structured
  self-attentive sentence embedding (Lin et al., ICLR 2017);
* ``selection``: hard pooling (top-k, Gumbel or argmax straight-through).

Axes: B batch, T time, D features, Q queries.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnmtl.attention.base import check_dropout, check_key_padding_mask
from attnmtl.attention.selection import Selection


class AttentionPooling(nn.Module):
    """Pool a sequence (B, T, D) into (B, D) — or (B, Q, D) with Q learned queries.

    Args:
        dim: feature size D.
        num_queries: number Q of learned queries; the output keeps a Q axis when Q > 1.
        hidden_dim: hidden size of an MLP scorer; None scores with one Linear (the seed's).
        dropout: dropout on the weights (training only).
        selection, top_k, tau: see :class:`~attnmtl.attention.selection.Selection`.
    """

    def __init__(
        self,
        dim: int,
        num_queries: int = 1,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        selection: str = "softmax",
        top_k: int | None = None,
        tau: float = 1.0,
    ) -> None:
        super().__init__()
        if dim < 1 or num_queries < 1 or (hidden_dim is not None and hidden_dim < 1):
            raise ValueError(
                f"dim={dim!r}, num_queries={num_queries!r}, hidden_dim={hidden_dim!r}; "
                "expected sizes >= 1 (hidden_dim may be None)"
            )
        self.dim, self.num_queries = dim, num_queries
        self.dropout = check_dropout(dropout)
        self.select = Selection(selection, top_k, tau)
        self.scorer: nn.Module
        if hidden_dim is None:
            self.scorer = nn.Linear(dim, num_queries)
        else:
            self.scorer = nn.Sequential(
                nn.Linear(dim, hidden_dim),
                nn.Tanh(),
                nn.Linear(hidden_dim, num_queries, bias=False),
            )

    @property
    def out_dim(self) -> int:
        """Size of the pooled vector once flattened (Q · D)."""
        return self.num_queries * self.dim

    def forward(
        self, x: Tensor, mask: Tensor | None = None, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Pool ``x`` (B, T, D); ``mask`` (B, T) is True at real steps.

        Returns the pooled (B, D) — (B, Q, D) when Q > 1 — and, with ``return_weights``, the
        weights (B, T) — (B, Q, T). A sample with every step masked pools to zeros.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"input {tuple(x.shape)}; expected (B, T, {self.dim})")
        check_key_padding_mask(mask, x.shape[0], x.shape[1])
        scores = self.scorer(x).transpose(1, 2)  # (B, Q, T)
        weights = self.select(scores, None if mask is None else mask[:, None, :], self.training)
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        pooled = dropped @ x  # (B, Q, D)
        if self.num_queries == 1:
            pooled, weights = pooled.squeeze(1), weights.squeeze(1)  # (B, D), (B, T)
        return (pooled, weights) if return_weights else pooled
