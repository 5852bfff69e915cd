"""What every encoder returns.

Axes: B batch, T time (or flattened positions), D features, H heads.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class EncoderOutput:
    """An encoder's pooled features, per-step features and attention.

    Attributes:
        pooled: (B, D_out) one vector per sample.
        sequence: (B, T, D) per-step (or per-position) features; per-task attention reads these.
        mask: (B, T) True at real steps, or None when every step is real.
        attention: the pooling weights (B, T) — (B, Q, T) with Q queries — or None when the
            pooling is not attention.
        layer_attention: per-layer self-attention weights (B, H, T, T), when asked for.
        feature_maps: per-block feature maps (B, C, *S) of a CNN, for attention transfer.
    """

    pooled: Tensor
    sequence: Tensor
    mask: Tensor | None = None
    attention: Tensor | None = None
    layer_attention: list[Tensor] | None = None
    feature_maps: list[Tensor] | None = None
