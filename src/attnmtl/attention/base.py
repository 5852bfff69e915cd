"""The forward pass shared by single-head attention scorers.

Axes: B batch, Tq queries, Tk keys, Dq/Dk/Dv query/key/value features.

A scorer defines ``score(query, key) -> (B, Tq, Tk)``; this base turns scores into weights with
the configured :class:`~attnmtl.attention.selection.Selection` (padding masked), applies attention
dropout and returns the weighted sum of the values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnmtl.attention.selection import Selection


def check_dropout(dropout: float) -> float:
    """Validate an attention-dropout probability."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r}; expected a probability in [0, 1)")
    return float(dropout)


def check_key_padding_mask(mask: Tensor | None, batch: int, keys: int) -> None:
    """Raise ValueError unless ``mask`` is None or a boolean (B, Tk) tensor."""
    if mask is None:
        return
    if mask.dtype != torch.bool or tuple(mask.shape) != (batch, keys):
        raise ValueError(
            f"key_padding_mask has dtype {mask.dtype} and shape {tuple(mask.shape)}; "
            f"expected torch.bool of shape ({batch}, {keys}) with True = real token"
        )


def check_qkv(query: Tensor, key: Tensor, value: Tensor, expected: str) -> None:
    """Raise ValueError unless query, key and value are 3-D with agreeing batch and key axes."""
    if (
        query.dim() != 3
        or key.dim() != 3
        or value.shape[:2] != key.shape[:2]
        or query.shape[0] != key.shape[0]
    ):
        raise ValueError(
            f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}; "
            f"expected {expected}"
        )


class SoftAttention(nn.Module, ABC):
    """Single-head attention: ``weights = select(score(q, k))``, ``output = weights @ v``.

    ``forward`` accepts a query sequence (B, Tq, Dq) or a single query per sample (B, Dq); in the
    second case the query axis is dropped from the output (B, Dv) and the weights (B, Tk).
    The weights returned are those before attention dropout.
    """

    def __init__(
        self,
        dropout: float = 0.0,
        selection: str = "softmax",
        top_k: int | None = None,
        tau: float = 1.0,
    ) -> None:
        super().__init__()
        self.dropout = check_dropout(dropout)
        self.select = Selection(selection, top_k, tau)

    @abstractmethod
    def score(self, query: Tensor, key: Tensor) -> Tensor:
        """Unnormalised scores (B, Tq, Tk) for queries (B, Tq, Dq) and keys (B, Tk, Dk)."""

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)  # (B, 1, Dq)
        value = key if value is None else value
        check_qkv(query, key, value, "(B, Tq, Dq) or (B, Dq), (B, Tk, Dk) and (B, Tk, Dv)")
        check_key_padding_mask(key_padding_mask, key.shape[0], key.shape[1])
        mask = None if key_padding_mask is None else key_padding_mask[:, None, :]  # (B, 1, Tk)
        out, weights = self.attend(query, key, value, mask, return_weights)
        if single:
            out = out.squeeze(1)
            weights = None if weights is None else weights.squeeze(1)
        if return_weights:
            assert weights is not None
            return out, weights
        return out

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Output (B, Tq, Dv) and weights (B, Tq, Tk), computed explicitly (the reference path).

        Subclasses with a fused kernel may return None for the weights when not ``need_weights``.
        """
        weights = self.select(self.score(query, key), mask, self.training)
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        return dropped @ value, weights
