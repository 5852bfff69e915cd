"""CGC and PLE: per-task and shared experts, mixed by per-task gates, level after level.

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
from attnmtl.models.registry import register_model

SHARED = "__shared__"  # the key of the shared experts and the shared gate of a level


def mlp_experts(count: int, dim: int) -> nn.ModuleList:
    """``count`` experts of a level above the first: Linear(D, D) + ReLU on the mixture below."""
    return nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) for _ in range(count))


def stages(modules: nn.ModuleList) -> list[nn.ModuleDict]:
    """The per-level module dicts of ``modules`` (typed as what they are)."""
    return [cast(nn.ModuleDict, m) for m in modules]


def expert_outputs(experts: nn.ModuleDict, reads: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each owner's experts above the first level on its input: owner → (B, E, D)."""
    return {
        o: torch.stack([e(reads[o]) for e in cast(nn.ModuleList, m)], 1) for o, m in experts.items()
    }


def mix(gate: Tensor, experts: Tensor) -> Tensor:
    """``Σ_e gate_e expert_e``: (B, E) gates over (B, E, D) outputs → (B, D)."""
    return (gate.unsqueeze(1) @ experts).squeeze(1)


@register_model("ple")
class PLE(ExpertModel):
    """Tang, Liu, Zhao & Gong, "Progressive Layered Extraction (PLE): A Novel Multi-Task
    Learning (MTL) Model for Personalized Recommendations", RecSys 2020.

    MMoE's experts are all shared, so every task's gradient reaches every expert and tasks that
    conflict pull them apart (the paper's "seesaw"). Customized Gate Control (CGC) separates
    them: each task k has ``task_experts`` experts of its own and there are ``shared_experts``
    experts for all; task k's gate mixes its own and the shared ones,
    ``f^k(x) = Σ_e g^k(x)_e [E_k(x); E_s(x)]_e``, and its tower reads the mixture. PLE stacks
    ``num_levels`` such extraction layers: at every level but the last a shared gate also mixes
    *every* expert of the level (all tasks' and the shared ones) into the input of the next
    level's shared experts, while task k's experts of the next level read task k's mixture
    (the paper's Eq. 5–6). The first level's experts are encoders of the input (``encoder``);
    the experts above are Linear(D, D) + ReLU on the mixture below, and their gates read that
    mixture. ``num_levels=1`` is CGC (registered as ``cgc``).

    Parameters: the last level's task-k experts and gate, task k's gate one level below (it
    feeds only those), and task k's tower serve task k alone; everything else feeds a shared
    gate and so every task (:meth:`task_modules`).
    ``attention[task]`` is task k's last gate (B, E_task + E_shared), its own experts first
    (:meth:`gate_labels` names them); ``features`` is the last level's shared experts' outputs
    (B, E_shared, D).

    Args:
        tasks, input_shape, layout: injected from the data set.
        encoder: the first level's expert kind, ``rnn``, ``transformer``, ``cnn`` or ``mlp``.
        task_experts: experts of each task per level, >= 1.
        shared_experts: shared experts per level, >= 1.
        num_levels: extraction levels, >= 1 (1: CGC).
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
        shared_experts: int = 2,
        num_levels: int = 2,
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        pooling_options: Mapping[str, Any] | None = None,
        gate_input: str = "mean",
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        check_count("task_experts", task_experts)
        check_count("shared_experts", shared_experts)
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
        self.levels = nn.ModuleList()
        self.gates = nn.ModuleList()
        width = self.gate_width
        for level in range(num_levels):
            owners = [*self.tasks, SHARED]
            if level == 0:
                experts = {
                    o: self.make_experts(shared_experts if o == SHARED else task_experts)
                    for o in owners
                }
            else:
                dim = self.expert_dim
                experts = {
                    o: mlp_experts(shared_experts if o == SHARED else task_experts, dim)
                    for o in owners
                }
            self.levels.append(nn.ModuleDict(experts))
            total = len(self.tasks) * task_experts + shared_experts
            gates = {t: nn.Linear(width, task_experts + shared_experts) for t in self.tasks}
            if level < num_levels - 1:
                gates[SHARED] = nn.Linear(width, total)
            self.gates.append(nn.ModuleDict(gates))
            width = self.expert_dim
        self.build_towers()

    def task_modules(self, task: str) -> list[nn.Module]:
        """Task k's last-level experts and gate, the gate below them (it feeds only those), and
        its tower."""
        gates = stages(self.gates)
        own = [stages(self.levels)[-1][task], gates[-1][task], self.towers[task]]
        return own if len(gates) < 2 else [*own, gates[-2][task]]

    def gate_labels(self, task: str) -> list[str]:
        """The items of a task's gate: its own experts, then the shared ones."""
        own = [f"{task} e{e}" for e in range(self.task_experts)]
        return own + [f"shared e{e}" for e in range(self.shared_experts)]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """The levels bottom-up; each task's tower on its last mixture."""
        x = self.check_input(inputs)
        gate_in = self.gate_features(x, lengths)
        reads: dict[str, Tensor] = dict.fromkeys([*self.tasks, SHARED], gate_in)
        attention: dict[str, Tensor] = {}
        shared_out = torch.empty(0)
        levels = zip(stages(self.levels), stages(self.gates), strict=True)
        for level, (experts, gates) in enumerate(levels):
            if level == 0:
                outs = {
                    o: self.run_experts(cast(nn.ModuleList, m), x, lengths)
                    for o, m in experts.items()
                }
            else:  # each owner's experts read its mixture from the level below
                outs = expert_outputs(experts, reads)
            shared_out = outs[SHARED]
            mixed: dict[str, Tensor] = {}
            for task in self.tasks:
                gate = torch.softmax(gates[task](reads[task]), -1)
                mixed[task] = mix(gate, torch.cat([outs[task], shared_out], 1))
                attention[task] = gate
            if SHARED in gates:
                every = torch.cat([*(outs[t] for t in self.tasks), shared_out], 1)
                mixed[SHARED] = mix(torch.softmax(gates[SHARED](reads[SHARED]), -1), every)
            reads = mixed
        preds = {t: self.towers[t](self.dropout(reads[t])) for t in self.tasks}
        return MultiTaskOutput(preds, attention, shared_out)


@register_model("cgc")
class CGC(PLE):
    """Customized Gate Control (Tang et al. 2020, §4.2): PLE with one extraction level —
    per-task and shared experts, each task's gate mixing its own and the shared ones. See
    :class:`PLE` for the arguments (``num_levels`` is 1)."""

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        encoder: str = "rnn",
        task_experts: int = 1,
        shared_experts: int = 2,
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        pooling_options: Mapping[str, Any] | None = None,
        gate_input: str = "mean",
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            tasks,
            input_shape,
            layout,
            encoder,
            task_experts,
            shared_experts,
            1,
            encoder_options,
            pooling,
            pooling_options,
            gate_input,
            head_hidden_dim,
            dropout,
        )
