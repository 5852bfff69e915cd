"""Uncertainty weighting (UW): learnable homoscedastic task uncertainty.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.registry import register_weighting


@register_weighting("uncertainty")
class UncertaintyWeighting(Weighting):
    """Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics", CVPR 2018.

    Each task has a learnable log-variance ``s_k = log σ_k²`` and the combined loss is
    ``L = Σ_k L_k / (2 exp(s_k)) + s_k / 2``: a noisy task (large σ) is down-weighted, and the
    ``s_k / 2`` term (the Gaussian likelihood's normaliser) stops σ from growing without bound.
    Learning ``log σ²`` rather than σ keeps the weight positive and the optimisation stable,
    as the paper recommends. We use the paper's regression form ``1/(2σ²)`` for every task, as
    the common implementations (LibMTL) do.

    Each ``s_k`` is its own scalar ``nn.Parameter`` (``log_vars.<k>``), so a task absent from a
    batch leaves its ``s_k`` with no gradient at all: the optimizer skips it rather than moving
    it by momentum or weight decay on a zero gradient. The trainer adds these parameters to its
    optimizer without weight decay.

    Args:
        tasks: names of all tasks, in order.
        init_log_var: initial ``s_k`` for every task; -0.5 as in LibMTL (weight ≈ 0.82).
    """

    def __init__(self, tasks: Sequence[str], init_log_var: float = -0.5) -> None:
        super().__init__(tasks)
        if not math.isfinite(init_log_var):
            raise ValueError(f"init_log_var={init_log_var!r}; expected a finite number")
        self.log_vars = nn.ParameterList(
            nn.Parameter(torch.tensor(float(init_log_var))) for _ in self.tasks
        )

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Combine as ``Σ L_k / (2 exp(s_k)) + s_k / 2``; report ``1 / (2 exp(s_k))``."""
        order = self.present(losses)
        terms, weights = [], {}
        for task in order:
            log_var = self.log_vars[self.index(task)]
            weight = 0.5 * torch.exp(-log_var)
            terms.append(weight * losses[task] + 0.5 * log_var)
            weights[task] = weight.detach()
        total = torch.stack(terms).sum()
        ctx.scale(total).backward()
        return weights
