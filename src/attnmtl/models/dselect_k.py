"""DSelect-k: MMoE with differentiable top-k gates that select exactly k experts.

Axes: B batch, E experts, D expert output size, S selectors (k), M code bits (⌈log₂ E⌉).
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
from attnmtl.models.experts import ExpertModel, check_count
from attnmtl.models.registry import register_model


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """The paper's cubic smooth-step: 0 below ``−γ/2``, 1 above ``γ/2``, and
    ``−2t³/γ³ + 3t/(2γ) + 1/2`` between (continuously differentiable, exactly 0 or 1 outside)."""
    inner = -2 * t**3 / gamma**3 + 3 * t / (2 * gamma) + 0.5
    return torch.where(t <= -gamma / 2, 0.0, torch.where(t >= gamma / 2, 1.0, inner))


class DSelectGate(nn.Module):
    """One task's DSelect-k gate over E experts (Hazimeh et al. 2021, §3).

    Each of k selectors encodes one expert index in M = ⌈log₂ E⌉ soft bits
    ``s = S(z)`` (:func:`smooth_step`); expert j's weight under selector i is
    ``r_i(j) = Π_l s_il^{b_l(j)} (1 − s_il)^{1 − b_l(j)}`` (``b(j)`` the bits of j), a
    distribution over the 2^M codes that becomes one-hot once every bit has left the band
    ``(−γ/2, γ/2)``. The selectors are mixed by ``softmax(α)``: ``q = Σ_i softmax(α)_i r_i``,
    which then weighs at most k experts. Per-example gating (the paper's ``z = Wx``,
    ``α = Vx``), read from the gate input. When E is not a power of two the codes beyond E
    are dropped and ``r_i`` renormalised over the E real experts.
    """

    codes: Tensor

    def __init__(self, in_dim: int, num_experts: int, k: int, gamma: float) -> None:
        super().__init__()
        self.bits = max(1, math.ceil(math.log2(num_experts)))
        self.num_experts, self.k, self.gamma = num_experts, k, gamma
        self.selectors = nn.Linear(in_dim, k * self.bits)
        self.mixing = nn.Linear(in_dim, k)
        codes = torch.tensor(
            [[(j >> b) & 1 for b in range(self.bits)] for j in range(2**self.bits)],
            dtype=torch.bool,
        )
        self.register_buffer("codes", codes, persistent=False)  # (2^M, M)

    def forward(self, x: Tensor) -> Tensor:
        """Gate weights (B, E) for gate inputs (B, F); rows sum to one."""
        z = self.selectors(x).view(x.shape[0], self.k, 1, self.bits)  # (B, S, 1, M)
        s = smooth_step(z, self.gamma)
        r = torch.where(self.codes, s, 1 - s).prod(-1)[..., : self.num_experts]  # (B, S, E)
        total = r.sum(-1, keepdim=True)  # 0 only when every bit chose a code beyond E
        r = torch.where(total > 0, r / total.clamp_min(torch.finfo(r.dtype).tiny), 1 / r.shape[-1])
        alpha = torch.softmax(self.mixing(x), -1)  # (B, S)
        return (alpha.unsqueeze(-1) * r).sum(1)


@register_model("dselect_k")
class DSelectK(ExpertModel):
    """Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong & Chi, "DSelect-k:
    Differentiable Selection in the Mixture of Experts with Applications to Multi-Task
    Learning", NeurIPS 2021.

    MMoE's softmax gates weigh every expert; top-k gates select k of them but are not
    differentiable in which ones. DSelect-k's gates (:class:`DSelectGate`) are smooth and
    trained by gradient descent, yet select at most k experts exactly once their soft bits
    saturate. Otherwise as MMoE: E shared experts, one gate and one tower per task.
    (The paper's entropy regulariser, which speeds the bits' saturation, is not applied: the
    smooth-step reaches 0 and 1 exactly without it.) ``attention[task]`` is the task's gate
    (B, E); ``features`` the expert outputs (B, E, D).

    Args:
        tasks, input_shape, layout: injected from the data set.
        encoder: each expert's kind, ``rnn``, ``transformer``, ``cnn`` or ``mlp``.
        num_experts: E >= 2.
        k: experts each gate selects, 1 <= k <= E.
        gamma: ``γ`` > 0, the smooth-step's width (1.0 as the paper's experiments).
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
        k: int = 2,
        gamma: float = 1.0,
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        pooling_options: Mapping[str, Any] | None = None,
        gate_input: str = "mean",
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        check_count("num_experts", num_experts, least=2)
        check_count("k", k)
        if k > num_experts:
            raise ValueError(f"k={k!r}; expected at most num_experts={num_experts}")
        if isinstance(gamma, bool) or not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma={gamma!r}; expected a finite number > 0")
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
            {t: DSelectGate(self.gate_width, num_experts, k, float(gamma)) for t in self.tasks}
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
            gate = self.gates[name](gate_in)  # (B, E)
            preds[name] = self.towers[name](self.dropout((gate.unsqueeze(1) @ experts).squeeze(1)))
            attention[name] = gate
        return MultiTaskOutput(preds, attention, experts)
