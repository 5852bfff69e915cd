"""Reversible instance normalisation's input half (RevIN; Kim et al., ICLR 2022).

Axes: B batch, T time, F features.

Each window is normalised by its own statistics, per feature, over its real steps:
``x̂ = γ · (x − mean) / sqrt(var + ε) + β``, with γ, β learned per feature (ε = 1e-5 as in the
paper's code). The paper also reverses the normalisation on a forecast of the same series; in a
multi-task model the heads are not forecasts of the inputs, so that half belongs to the data: a
regression task's ``relative_to`` with ``window: {center: mean, scale: true}`` trains it on
``(y − mean) / std`` of the window and reports ``mean + std · prediction``
(:mod:`attnmtl.data.windows`). Padding stays as it was.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnmtl.encoders.pooling import lengths_to_mask

EPS = 1e-5


class RevIN(nn.Module):
    """Per-window, per-feature normalisation with a learned affine map.

    Args:
        num_features: F.
        affine: learn γ and β (initialised to 1 and 0); without, the plain standardisation.
        eps: the variance floor.
    """

    def __init__(self, num_features: int, affine: bool = True, eps: float = EPS) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features={num_features!r}; expected >= 1")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, T, F) → (B, T, F) normalised windows."""
        if lengths is None:
            mean = x.mean(1, keepdim=True)
            var = x.var(1, keepdim=True, correction=0)
        else:
            keep = lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            count = keep.sum(1, keepdim=True).clamp_min(1)
            mean = (x * keep).sum(1, keepdim=True) / count
            var = (((x - mean) ** 2) * keep).sum(1, keepdim=True) / count
        out = (x - mean) / torch.sqrt(var + self.eps)
        if self.weight is not None and self.bias is not None:
            out = out * self.weight + self.bias
        if lengths is not None:
            out = torch.where(keep.bool(), out, x)
        return out
