"""What every multi-task model returns.

Axes: B batch, T time, K tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class MultiTaskOutput:
    """Per-task predictions and attention of one forward pass.

    Attributes:
        preds: task name → raw outputs (logits or regression values), (B, size) per task, for
            every sample of the batch (losses select the labelled ones; nothing is zero-filled).
        attention: task name → that task's attention weights, e.g. (B, T) pooling weights.
        features: the shared representation, when the model has one.
        extras: other inspectable weights, e.g. ``fusion``: an attention-fusion model's
            per-sample weights over its source models.
    """

    preds: dict[str, Tensor]
    attention: dict[str, Tensor]
    features: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
