"""AdaTT: adaptive task-to-task fusion of every task's experts, with a residual of its own.

Axes: B batch, E experts, D expert output size, K tasks, L levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.experts import ExpertModel, check_count
from attnmtl.models.ple import SHARED, expert_outputs, mix, mlp_experts, stages
from attnmtl.models.registry import register_model


@register_model("adatt")
class AdaTT(ExpertModel):
    """Li, Ma, Liu, Wang, Guo, Yang, Xu, Zhou, Wang, Chen, Gai & Jin, "AdaTT: Adaptive
    Task-to-Task Fusion Network for Multitask Learning in Recommendations", KDD 2023.

    Every task has ``task_experts`` experts of its own per level (and, with
    ``shared_experts > 0``, there are experts for all: the paper's AdaTT-sp). At each level task
    k's fusion unit combines two parts (the paper's Eq. 3–5):

    - *adaptive fusion*: a gate from task k's input over **every** expert of the level, all
      tasks' and the shared ones, ``Σ_j g^k_j E_j`` — task k learns how much to take from each
      other task, not only from shared experts (as PLE);
    - a *residual* of its own experts, a learned linear combination ``Σ_i v^k_i E_{k,i}``
      (``v`` starts at 1), so task k's native knowledge always flows up.

    Task k's output is their sum; it is the input of task k's experts and gate at the next
    level (Linear(D, D) + ReLU experts above the first level, whose experts are encoders of
    the input); shared experts read the mean of the tasks' outputs. Each task's tower reads its
    last output. Only the last level's task-k gate and residual weights and task k's tower
    serve task k alone (:meth:`task_modules`): every expert, task k's too, feeds all gates.
    ``attention[task]`` is task k's last gate (B, K·E_task + E_shared) (:meth:`gate_labels`);
    ``features`` stacks the last level's experts (B, K·E_task + E_shared, D).

    Args:
        tasks, input_shape, layout: injected from the data set.
        encoder: the first level's expert kind, ``rnn``, ``transformer``, ``cnn`` or ``mlp``.
        task_experts: experts of each task per level, >= 1.
        shared_experts: shared experts per level, >= 0 (0: AdaTT, > 0: AdaTT-sp).
        num_levels: fusion levels, >= 1.
        encoder_options, pooling, pooling_options, gate_input, head_hidden_dim, dropout: see
            :class:`~attnmtl.models.experts.ExpertModel`.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        encoder: str = "rnn",
        task_experts: int = 1,
        shared_experts: int = 0,
        num_levels: int = 2,
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        pooling_options: Mapping[str, Any] | None = None,
        gate_input: str = "mean",
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        check_count("task_experts", task_experts)
        check_count("shared_experts", shared_experts, least=0)
        check_count("num_levels", num_levels)
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
        self.task_experts, self.shared_experts = task_experts, shared_experts
        owners = [*self.tasks, *([SHARED] if shared_experts else [])]
        total = len(self.tasks) * task_experts + shared_experts
        self.levels = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.residuals = nn.ModuleList()
        width = self.gate_width
        for level in range(num_levels):
            counts = {o: shared_experts if o == SHARED else task_experts for o in owners}
            if level == 0:
                experts = {o: self.make_experts(n) for o, n in counts.items()}
            else:
                experts = {o: mlp_experts(n, self.expert_dim) for o, n in counts.items()}
            self.levels.append(nn.ModuleDict(experts))
            self.gates.append(nn.ModuleDict({t: nn.Linear(width, total) for t in self.tasks}))
            self.residuals.append(nn.ModuleDict({t: Residual(task_experts) for t in self.tasks}))
            width = self.expert_dim
        self.build_towers()

    def task_modules(self, task: str) -> list[nn.Module]:
        """Task k's last-level gate and residual weights, and its tower (its experts feed
        every task's gate)."""
        return [stages(self.gates)[-1][task], stages(self.residuals)[-1][task], self.towers[task]]

    def gate_labels(self, task: str) -> list[str]:
        """The items of every task's gate: each task's experts, then the shared ones."""
        names = [f"{t} e{e}" for t in self.tasks for e in range(self.task_experts)]
        return names + [f"shared e{e}" for e in range(self.shared_experts)]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """The fusion levels bottom-up; each task's tower on its last output."""
        x = self.check_input(inputs)
        gate_in = self.gate_features(x, lengths)
        reads: dict[str, Tensor] = dict.fromkeys(self.tasks, gate_in)
        attention: dict[str, Tensor] = {}
        every = torch.empty(0)
        gates, residuals = stages(self.gates), stages(self.residuals)
        for level, experts in enumerate(stages(self.levels)):
            if level == 0:
                outs = {
                    o: self.run_experts(cast(nn.ModuleList, m), x, lengths)
                    for o, m in experts.items()
                }
            else:  # shared experts read the mean of the tasks' outputs
                mean = torch.stack([reads[t] for t in self.tasks]).mean(0)
                outs = expert_outputs(experts, {**reads, SHARED: mean})
            every = torch.cat([outs[o] for o in experts], 1)  # (B, K·E_t + E_s, D)
            fused: dict[str, Tensor] = {}
            for task in self.tasks:
                gate = torch.softmax(gates[level][task](reads[task]), -1)
                fused[task] = mix(gate, every) + residuals[level][task](outs[task])
                attention[task] = gate
            reads = fused
        preds = {t: self.towers[t](self.dropout(reads[t])) for t in self.tasks}
        return MultiTaskOutput(preds, attention, every)


class Residual(nn.Module):
    """A task's residual: ``Σ_i v_i E_i`` over its own experts' outputs, ``v`` learned from 1."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(count))

    def forward(self, outputs: Tensor) -> Tensor:
        """(B, E, D) → (B, D)."""
        return (self.weight.to(outputs.dtype)[:, None] * outputs).sum(1)
