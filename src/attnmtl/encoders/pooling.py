"""Pooling a (B, T, D) sequence into (B, D_out): attention, masked mean or masked max.

Axes: B batch, T time, D features.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.attention import AttentionPooling

POOLINGS = ("attention", "mean", "max")


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, T) boolean mask, True at the first ``lengths[b]`` steps."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def resolve_mask(lengths: Tensor | None, mask: Tensor | None, max_len: int) -> Tensor | None:
    """One (B, T) mask from either ``lengths`` or ``mask`` (not both)."""
    if lengths is not None and mask is not None:
        raise ValueError("give either lengths or mask, not both")
    if lengths is not None:
        if lengths.dim() != 1:
            raise ValueError(f"lengths has shape {tuple(lengths.shape)}; expected (B,)")
        return lengths_to_mask(lengths, max_len)
    return mask


class MaskedPooling(nn.Module):
    """Parameter-free masked mean or max over time; a fully masked sample pools to zeros."""

    def __init__(self, dim: int, kind: str = "mean") -> None:
        super().__init__()
        if kind not in ("mean", "max"):
            raise ValueError(f"kind={kind!r}; expected 'mean' or 'max'")
        self.kind, self.out_dim = kind, dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return x.mean(1) if self.kind == "mean" else x.amax(1)
        m = mask.unsqueeze(-1)  # (B, T, 1)
        if self.kind == "mean":
            return (x * m).sum(1) / m.sum(1).clamp(min=1)
        pooled = x.masked_fill(~m, float("-inf")).amax(1)  # (B, D)
        return pooled.masked_fill(~m.any(1), 0.0)


def make_pooling(
    pooling: str | nn.Module, dim: int, options: Mapping[str, Any] | None = None
) -> nn.Module:
    """Build a pooling module by name, or pass a given module through (e.g. one shared scorer).

    ``options`` go to :class:`~attnmtl.attention.AttentionPooling` (``num_queries``,
    ``hidden_dim``, ``selection``, ``top_k``, ``tau``, ``dropout``) and are rejected for the
    other kinds, as is an option it does not take.
    """
    options = dict(options or {})
    if options and pooling != "attention":
        raise ValueError(f"pooling options {sorted(options)} need pooling='attention'")
    if isinstance(pooling, nn.Module):
        return pooling
    if pooling == "attention":
        valid = set(inspect.signature(AttentionPooling).parameters) - {"dim"}
        for key in options:
            if key not in valid:
                raise ValueError(
                    f"unknown pooling option {key!r}; expected one of: {', '.join(sorted(valid))}"
                )
        return AttentionPooling(dim, **options)
    if pooling in ("mean", "max"):
        return MaskedPooling(dim, pooling)
    raise ValueError(f"pooling={pooling!r}; expected one of: {', '.join(POOLINGS)}")


def apply_pooling(pool: nn.Module, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Pooled (B, D_out) and attention weights (or None) from ``pool`` applied to ``x``."""
    if isinstance(pool, AttentionPooling):
        pooled, weights = pool(x, mask, return_weights=True)
        return pooled.flatten(1), weights
    return pool(x, mask), None


def pooled_dim(pool: nn.Module, dim: int) -> int:
    """Size of the pooled vector a pooling module produces from D-sized steps."""
    return int(getattr(pool, "out_dim", dim))
