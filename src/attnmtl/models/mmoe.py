"""Multi-gate mixture-of-experts (MMoE): shared experts, one softmax gate and tower per task.

Axes: B batch, T time, F features, C channels, E experts, D expert output size, K tasks.

Ma, Zhao, Yi, Chen, Hong & Chi, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018. Hard sharing forces every task onto one
representation, which hurts when tasks are weakly related; MMoE shares E expert networks and
lets each task k mix them with its own gate computed from the input,
``g^k(x) = softmax(W_gk x)``, ``f^k(x) = Σ_e g^k(x)_e f_e(x)``, ``y_k = h^k(f^k(x))``, so tasks
that differ can weight different experts. How a gate reads the input: :mod:`attnmtl.models.experts`.
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


@register_model("mmoe")
class MMoE(ExpertModel):
    """E expert encoders, one softmax gate over them per task, one tower (head) per task.

    Args:
        tasks, input_shape, layout: injected from the data set.
        encoder: each expert's kind, ``rnn``, ``transformer``, ``cnn`` or ``mlp``.
        num_experts: E >= 1.
        encoder_options, pooling, pooling_options, gate_input, head_hidden_dim, dropout: see
            :class:`~attnmtl.models.experts.ExpertModel`.

    ``attention[task]`` is the task's gate (B, E), rows summing to one; ``features`` is the
    stack of expert outputs (B, E, D) that every task mixes.
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
        self.gates = nn.ModuleDict(
            {name: nn.Linear(self.gate_width, num_experts) for name in self.tasks}
        )
        self.build_towers()

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.gates[task], self.towers[task]]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions, its gate (B, E) and the expert outputs (B, E, D)."""
        x = self.check_input(inputs)
        experts = self.run_experts(self.experts, x, lengths)  # (B, E, D)
        gate_in = self.gate_features(x, lengths)
        preds, attention = {}, {}
        for name in self.tasks:
            gate = torch.softmax(self.gates[name](gate_in), -1)  # (B, E)
            mixed = (gate.unsqueeze(1) @ experts).squeeze(1)  # (B, D)
            preds[name] = self.towers[name](self.dropout(mixed))  # (B, out)
            attention[name] = gate
        return MultiTaskOutput(preds, attention, experts)
