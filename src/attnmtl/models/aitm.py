"""AITM: each task's tower attends over its own representation and the one transferred from
the task before it.

Axes: B batch, D tower width, K tasks in order.
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
from attnmtl.models.base import MultiTaskModel, make_head
from attnmtl.models.encoder import build_encoder
from attnmtl.models.experts import check_count
from attnmtl.models.hard_sharing import SHARED_POOLINGS, check_encoder_options
from attnmtl.models.registry import register_model


class InformationTransfer(nn.Module):
    """The AIT module (Xi et al. 2021, Eq. 3–5): attention over the transferred information
    ``p`` and the task's own ``q``,

        w_u = softmax_u(⟨h₂(u), h₃(u)⟩ / √D),   z = Σ_{u ∈ {p, q}} w_u h₁(u),

    with ``h₁, h₂, h₃`` linear maps D → D. Returns ``z`` (B, D) and the weights (B, 2) in the
    order (transferred, own).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.value, self.query, self.key = (nn.Linear(dim, dim) for _ in range(3))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, transferred: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
        u = torch.stack([transferred, own], 1)  # (B, 2, D)
        scores = (self.query(u) * self.key(u)).sum(-1) * self.scale  # (B, 2)
        weights = torch.softmax(scores, -1)
        return (weights.unsqueeze(-1) * self.value(u)).sum(1), weights


@register_model("aitm")
class AITM(MultiTaskModel):
    """Xi, Chen, Yan, Yang, Zhang & Zhou, "Modeling the Sequential Dependence among Audience
    Multi-step Conversions with Multi-task Learning in Targeted Display Advertising", KDD 2021.

    For tasks with a natural order (impression → click → purchase; coarse → fine labels), each
    task's tower receives what the task before it learnt: a shared encoder feeds one tower per
    task, ``q_k = tower_k(x)``; the previous task's final representation is carried over by a
    transfer layer ``p_k = g_{k−1}(z_{k−1})`` (Linear + ReLU), and an attention module
    (:class:`InformationTransfer`) decides per sample how much of it to take:
    ``z_k = AIT(p_k, q_k)``; the first task has ``z_1 = q_1``. Each task's head reads ``z_k``.
    The paper's behavioural-expectation calibrator (a loss tying ``ŷ_k <= ŷ_{k−1}`` for
    funnel probabilities) is specific to conversion funnels and not part of the model.

    Parameters: the encoder is shared; each task owns its head, and the last task its tower
    and AIT module too. Every earlier tower, transfer layer and AIT module feeds the tasks
    after it, so they count as shared. ``attention[task]`` holds each later
    task's transfer weights (B, 2), (transferred, own) (:meth:`gate_labels`), which the report
    draws as a gate; ``features`` is the encoder's pooled vector (B, D).

    Args:
        tasks, input_shape, layout: injected from the data set.
        order: the task names in transfer order; None: the data set's order.
        encoder: ``rnn``, ``transformer``, ``cnn`` or ``mlp``.
        tower_dim: D, each tower's output width.
        encoder_options, pooling, pooling_options: the shared encoder's, as in
            :class:`~attnmtl.models.HardSharing`.
        head_hidden_dim: hidden width of each task's head; None = one Linear layer.
        dropout: dropout on each tower's output and inside MLP heads.
    """

    gated = True  # attention[task] weighs (transferred, own), drawn like a gate

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        order: Sequence[str] | None = None,
        encoder: str = "rnn",
        tower_dim: int = 32,
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        pooling_options: Mapping[str, Any] | None = None,
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        names = list(self.tasks)
        order = names if order is None else list(order)
        if sorted(order) != sorted(names):
            raise ValueError(f"order={order!r}; expected each of the tasks {names} once")
        if len(order) < 2:
            raise ValueError(f"aitm transfers between tasks; got one task {order}")
        check_count("tower_dim", tower_dim)
        if pooling not in SHARED_POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of: {', '.join(SHARED_POOLINGS)}")
        options = check_encoder_options(encoder_options or {}, ("pooling", "pooling_options"))
        self.order = order
        self.encoder = build_encoder(
            encoder,
            tuple(input_shape),
            layout,
            pooling=pooling,
            pooling_options=pooling_options,
            **options,
        )
        dim = self.encoder.out_dim
        self.towers = nn.ModuleDict(
            {t: nn.Sequential(nn.Linear(dim, tower_dim), nn.ReLU()) for t in order}
        )
        self.transfers = nn.ModuleDict(
            {t: nn.Sequential(nn.Linear(tower_dim, tower_dim), nn.ReLU()) for t in order[:-1]}
        )
        self.ait = nn.ModuleDict({t: InformationTransfer(tower_dim) for t in order[1:]})
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {
                name: make_head(tower_dim, task.out_dim, head_hidden_dim, dropout)
                for name, task in self.tasks.items()
            }
        )

    def task_modules(self, task: str) -> list[nn.Module]:
        """A task's head; the last task's tower and AIT module too (nothing reads them after)."""
        if task == self.order[-1] and task in self.ait:
            return [self.heads[task], self.towers[task], self.ait[task]]
        return [self.heads[task]]

    def gate_labels(self, task: str) -> list[str]:
        """The two items a later task's transfer attention weighs."""
        previous = self.order[self.order.index(task) - 1]
        return [f"from {previous}", "own"]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """The towers in order, each later one attending over the transfer from the one before."""
        enc = self.encoder(inputs, lengths)
        shared = enc.pooled  # (B, D)
        preds, attention = {}, {}
        previous: Tensor | None = None
        for k, task in enumerate(self.order):
            own = self.towers[task](shared)  # (B, D_t)
            if k == 0:
                z = own
            else:
                assert previous is not None
                carried = self.transfers[self.order[k - 1]](previous)
                z, attention[task] = self.ait[task](carried, own)
            preds[task] = self.heads[task](self.dropout(z))
            previous = z
        return MultiTaskOutput(preds, attention, shared)
