"""MoDo: multi-objective gradient descent with double sampling.

Axes: S = 3 independent estimates, K tasks present in the batch, P shared parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import (
    Engine,
    Mode,
    PartGradients,
    SampledWeighting,
    check_positive,
)
from attnmtl.weighting.moco import keep_mass
from attnmtl.weighting.registry import register_weighting
from attnmtl.weighting.solvers import simplex_projection


@register_weighting("modo")
class MoDo(SampledWeighting):
    """Chen, Fu, Xu & Chen, "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
    Generalization and Conflict-Avoidance", NeurIPS 2023.

    MGDA's weights solve ``min_λ ‖Gᵀλ‖²`` on the simplex; with stochastic gradients
    ``E[GGᵀ] ≠ E[G] E[G]ᵀ``, so the solved weights are biased. MoDo takes one projected
    gradient step on ``λ`` per iteration with an unbiased estimate of ``∇_λ ½‖Gᵀλ‖²`` from two
    independent samples, and updates the model with a third:

        λ ← Π_Δ(λ − γ (G₁ G₂ᵀ λ + ρ λ)),   d = G₃ᵀ λ,

    (the paper's Algorithm 1; LibMTL's ``MoDo``), G₁, G₂, G₃ the task gradients on three
    disjoint parts of the batch (:class:`~attnmtl.weighting.gradient.SampledWeighting`), ``λ``
    starting at 1/K and kept across steps. Only G₁ is needed as rows: ``G₂ᵀλ`` and ``G₃ᵀλ``
    are one backward pass each, so a step takes K + 2 gradient rows where the three matrices
    take 3K. A task absent from a batch keeps its share of ``λ``. The weights reported are
    ``λ``.

    Args:
        tasks: names of all tasks, in order.
        gamma: ``γ`` > 0, the weights' step; 1e-3 as LibMTL.
        rho: ``ρ`` >= 0, the regulariser; 0.1 as LibMTL.
        mode, engine, log_losses: see :class:`~attnmtl.weighting.gradient.SampledWeighting`.
    """

    samples = 3
    lambdas: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        gamma: float = 1e-3,
        rho: float = 0.1,
        mode: Mode = "parameters",
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks, mode=mode, engine=engine, log_losses=log_losses)
        check_positive("gamma", gamma)
        check_positive("rho", rho, allow_zero=True)
        self.gamma, self.rho = float(gamma), float(rho)
        k = len(self.tasks)
        self.register_buffer("lambdas", torch.full((k,), 1.0 / k, dtype=torch.float64))

    def direction(
        self, parts: PartGradients, losses: Tensor, index: list[int]
    ) -> tuple[Tensor, Tensor]:
        """One projected step on ``λ`` from G₁ (rows) and G₂ᵀλ (one combination);
        ``d = G₃ᵀλ`` (one combination): K + 2 gradient rows in all, not 3K."""
        idx = torch.tensor(index, device=self.lambdas.device)
        old = self.lambdas[idx]
        lam = old / old.sum() if float(old.sum()) > 0 else torch.full_like(old, 1 / len(index))
        first = parts.rows(0)
        inner = (first @ parts.combined(1, lam).to(first.dtype)).double()  # G₁ G₂ᵀ λ
        if not bool(torch.isfinite(inner).all()):
            return parts.combined(2, torch.ones_like(lam)), torch.ones_like(losses)
        lam = simplex_projection(lam - self.gamma * (inner + self.rho * lam))
        self.lambdas[idx] = keep_mass(old, lam)
        return parts.combined(2, lam), lam.to(losses.dtype)
