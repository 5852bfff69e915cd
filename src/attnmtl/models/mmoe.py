"""Multi-gate mixture-of-experts (MMoE): shared experts, one softmax gate and tower per task.

Axes: B batch, T time, F features, C channels, E experts, D expert output size, K tasks.

Ma, Zhao, Yi, Chen, Hong & Chi, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018. Hard sharing forces every task onto one
representation, which hurts when tasks are weakly related; MMoE shares E expert networks and
lets each task k mix them with its own gate computed from the input,
``g^k(x) = softmax(W_gk x)``, ``f^k(x) = Σ_e g^k(x)_e f_e(x)``, ``y_k = h^k(f^k(x))``, so tasks
that differ can weight different experts.

The gate reads the raw input. The paper's input is one flat vector; here ``gate_input`` says
how a sample becomes one:

========  ============================  ==================================
layout    ``mean``                      ``flatten``
========  ============================  ==================================
sequence  mean over real steps (B, F)   all steps (B, T·F), padding zeroed
image     mean over positions (B, C)    all pixels (B, C·H·W)
table     the row as is (B, F)          the row as is (B, F)
========  ============================  ==================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.encoders import lengths_to_mask
from attnmtl.models.base import MultiTaskModel, make_head
from attnmtl.models.encoder import SharedEncoder, build_encoder
from attnmtl.models.hard_sharing import SHARED_POOLINGS, check_encoder_options
from attnmtl.models.registry import register_model

GATE_INPUTS = ("mean", "flatten")


def gate_dim(input_shape: tuple[int, ...], layout: str, gate_input: str) -> int:
    """Size of the vector a gate reads (see the module table)."""
    if gate_input == "flatten" or layout == "table":
        return math.prod(input_shape)
    return input_shape[0] if layout == "image" else input_shape[-1]


@register_model("mmoe")
class MMoE(MultiTaskModel):
    """E expert encoders, one softmax gate over them per task, one tower (head) per task.

    Args:
        tasks: the tasks (injected from the data set).
        input_shape: one sample's input shape (injected).
        layout: ``sequence``, ``image`` or ``table`` (injected).
        encoder: each expert's kind, ``rnn``, ``transformer`` or ``cnn``.
        num_experts: E >= 1.
        encoder_options: keyword arguments of every expert's encoder, without pooling.
        pooling: how each expert pools its steps into its output: ``mean``, ``max`` or
            ``attention`` (each expert then has its own scorer).
        pooling_options: options of the attention pooling (with ``pooling='attention'``).
        gate_input: ``mean`` or ``flatten`` (see the module table).
        head_hidden_dim: hidden width of each task's tower; None = one Linear layer.
        dropout: dropout on each task's mixture and inside MLP towers.

    ``attention[task]`` is the task's gate (B, E), rows summing to one; ``features`` is the
    stack of expert outputs (B, E, D) that every task mixes.
    """

    gated = True  # attention[task] is the task's gate over the experts

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
        super().__init__(tasks)
        if num_experts < 1:
            raise ValueError(f"num_experts={num_experts!r}; expected >= 1")
        if pooling not in SHARED_POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of: {', '.join(SHARED_POOLINGS)}")
        if gate_input not in GATE_INPUTS:
            raise ValueError(
                f"gate_input={gate_input!r}; expected one of: {', '.join(GATE_INPUTS)}"
            )
        options = check_encoder_options(encoder_options or {}, ("pooling", "pooling_options"))
        shape = tuple(input_shape)
        self.experts = nn.ModuleList(
            build_encoder(
                encoder, shape, layout, pooling=pooling, pooling_options=pooling_options, **options
            )
            for _ in range(num_experts)
        )
        self.layout, self.gate_input, self.input_shape = layout, gate_input, shape
        width = gate_dim(shape, layout, gate_input)
        self.gates = nn.ModuleDict({name: nn.Linear(width, num_experts) for name in self.tasks})
        self.dropout = nn.Dropout(dropout)
        first = self.experts[0]
        assert isinstance(first, SharedEncoder)
        dim = first.out_dim
        self.towers = nn.ModuleDict(
            {
                name: make_head(dim, task.out_dim, head_hidden_dim, dropout)
                for name, task in self.tasks.items()
            }
        )

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.gates[task], self.towers[task]]

    def gate_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The vector each gate reads, (B, F) — see the module table."""
        if self.gate_input == "flatten" or self.layout != "sequence":
            fits = tuple(x.shape[1:]) == self.input_shape
        else:  # steps may differ from batch to batch
            fits = x.dim() == 3 and x.shape[-1] == self.input_shape[-1]
        if not fits:
            raise ValueError(
                f"input {tuple(x.shape)} does not fit the gates' input shape {self.input_shape}"
            )
        if self.layout == "table":
            return x
        if self.layout == "image":
            return x.flatten(1) if self.gate_input == "flatten" else x.mean((2, 3))  # (B, C)
        if lengths is not None:
            x = x * lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T, F)
        if self.gate_input == "flatten":
            return x.flatten(1)  # (B, T·F)
        if lengths is None:
            return x.mean(1)  # (B, F)
        return x.sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)  # (B, F)

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions, its gate (B, E) and the expert outputs (B, E, D)."""
        if not isinstance(inputs, Tensor):
            raise ValueError(f"mmoe takes one input tensor, got arrays {sorted(inputs)}")
        experts = torch.stack([e(inputs, lengths).pooled for e in self.experts], 1)  # (B, E, D)
        gate_in = self.gate_features(inputs, lengths)
        preds, attention = {}, {}
        for name in self.tasks:
            gate = torch.softmax(self.gates[name](gate_in), -1)  # (B, E)
            mixed = (gate.unsqueeze(1) @ experts).squeeze(1)  # (B, D)
            preds[name] = self.towers[name](self.dropout(mixed))  # (B, out)
            attention[name] = gate
        return MultiTaskOutput(preds, attention, experts)
