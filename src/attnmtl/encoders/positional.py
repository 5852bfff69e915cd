"""Positional encodings: sinusoidal (Vaswani et al., NeurIPS 2017) or learned.

Axes: B batch, T time, D model width.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

POSITIONALS = ("sinusoidal", "learned", "none")


def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(p / 10000^(2i/D)); shape (T, D)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table


class PositionalEncoding(nn.Module):
    """Adds a position code to (B, T, D) inputs; T may not exceed ``max_len``."""

    def __init__(self, dim: int, max_len: int = 512, kind: str = "sinusoidal") -> None:
        super().__init__()
        if kind not in POSITIONALS:
            raise ValueError(f"positional={kind!r}; expected one of: {', '.join(POSITIONALS)}")
        if max_len < 1:
            raise ValueError(f"max_len={max_len!r}; expected >= 1")
        self.kind, self.max_len = kind, max_len
        self.table: Tensor | nn.Parameter | None
        if kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)
        elif kind == "learned":
            self.table = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        else:
            self.table = None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.max_len}")
        if self.table is None:
            return x
        return x + self.table[: x.shape[1]].to(x.dtype)
