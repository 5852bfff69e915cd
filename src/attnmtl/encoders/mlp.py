"""A multi-layer perceptron encoder for flat inputs (table rows, flattened images).

Axes: B batch, F input features (flattened), D output features.

Its output is one vector per sample, presented as a one-step sequence (B, 1, D) so that the
multi-task models' per-task attention pooling reads it like any encoder's output (with one step,
each task's attention weight is 1). This is also the shared trunk of the gradient-balancing
papers' reference set-ups (e.g. an MLP 64→256→256 with ReLU).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from attnmtl.encoders.output import EncoderOutput


class MLPEncoder(nn.Module):
    """Linear → activation (→ dropout) layers over the flattened input.

    Args:
        input_dim: features F of the flattened input.
        hidden_dims: width of each layer; the last one is the output size D.
        activation: ``relu``, ``gelu`` or ``tanh``.
        dropout: dropout after each activation.
        layer_norm: LayerNorm before each activation.
    """

    ACTIVATIONS: ClassVar[dict[str, type[nn.Module]]] = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
    }

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        dropout: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r}; expected one of: {', '.join(self.ACTIVATIONS)}"
            )
        if input_dim < 1 or not hidden_dims or min(hidden_dims) < 1:
            raise ValueError(
                f"input_dim={input_dim!r}, hidden_dims={list(hidden_dims)!r}; expected positive "
                "sizes and at least one layer"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r}; expected a probability in [0, 1)")
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise([input_dim, *hidden_dims]):
            layers.append(nn.Linear(cin, cout))
            if layer_norm:
                layers.append(nn.LayerNorm(cout))
            layers.append(self.ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        self.input_dim = input_dim
        self.dim = self.out_dim = hidden_dims[-1]

    def forward(self, x: Tensor) -> EncoderOutput:
        """Encode ``x`` (B, ...) flattened to (B, F); the sequence output is (B, 1, D)."""
        flat = x.flatten(1)  # (B, F)
        if flat.shape[1] != self.input_dim:
            raise ValueError(
                f"input {tuple(x.shape)} has {flat.shape[1]} features; expected {self.input_dim}"
            )
        pooled = self.net(flat)  # (B, D)
        return EncoderOutput(pooled, pooled.unsqueeze(1))
