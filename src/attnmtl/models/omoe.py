"""One-gate mixture-of-experts (OMoE): shared experts mixed by one gate for every task.

Axes: B batch, E experts, D expert output size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.experts import ExpertModel, check_count
from attnmtl.models.registry import register_model


@register_model("omoe")
class OMoE(ExpertModel):
    """The one-gate baseline of Ma et al., "Modeling Task Relationships in Multi-task Learning
    with Multi-gate Mixture-of-Experts", KDD 2018 (their "OMoE"; Shazeer et al.'s mixture of
    experts shared by all tasks).

    ``f(x) = Σ_e g(x)_e f_e(x)`` with one softmax gate ``g(x) = softmax(W_g x)`` shared by every
    task, then one tower per task: ``y_k = h^k(f(x))``. Against MMoE it isolates what the
    per-task gates buy. The gate and the experts are shared; each task owns its tower.
    ``attention[task]`` is the (same) gate (B, E) for every task; ``features`` the expert
    outputs (B, E, D).

    Args:
        tasks, input_shape, layout: injected from the data set.
        encoder: each expert's kind, ``rnn``, ``transformer``, ``cnn`` or ``mlp``.
        num_experts: E >= 1.
        encoder_options, pooling, pooling_options, gate_input, head_hidden_dim, dropout: see
            :class:`~attnmtl.models.experts.ExpertModel`.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        encoder: str = "rnn",
        num_experts: int = 4,
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        pooling_options: Mapping[str, Any] | None = None,
        gate_input: str = "mean",
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        check_count("num_experts", num_experts)
        super().__init__(
            tasks,
            input_shape,
            layout,
            encoder,
            encoder_options,
            pooling,
            pooling_options,
            gate_input,
            head_hidden_dim,
            dropout,
        )
        self.experts = self.make_experts(num_experts)
        self.gate = nn.Linear(self.gate_width, num_experts)
        self.build_towers()

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.towers[task]]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions from the one mixture; the gate (B, E) for every task."""
        x = self.check_input(inputs)
        experts = self.run_experts(self.experts, x, lengths)  # (B, E, D)
        gate = torch.softmax(self.gate(self.gate_features(x, lengths)), -1)  # (B, E)
        mixed = self.dropout((gate.unsqueeze(1) @ experts).squeeze(1))  # (B, D)
        preds = {name: self.towers[name](mixed) for name in self.tasks}
        return MultiTaskOutput(preds, dict.fromkeys(self.tasks, gate), experts)
