"""DB-MTL: dual balancing of loss scales (log losses) and gradient magnitudes.

Axes: K tasks present in the batch, N shared parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, Mode, Rows, RowWeighting, check_positive
from attnmtl.weighting.registry import register_weighting


@register_weighting("db_mtl")
class DBMTL(RowWeighting):
    """Lin, Ye, Xu, Shi & Zhang, "Dual-Balancing for Multi-Task Learning", arXiv:2308.12029,
    2023.

    Two balances in one update. Loss scales: each task's loss enters as ``log L_k``, whose
    gradient ``g_k / L_k`` no longer grows with the loss's unit. Gradient magnitudes: each
    task's gradient of its log loss is tracked by an exponential moving average,
    ``ĝ_k ← β_t ĝ_k + (1 − β_t) ∇ log L_k`` with ``β_t = β / t^σ`` (``ĝ_k = 0`` at the start),
    and every ``ĝ_k`` is rescaled to the largest norm among them:

        d = Σ_k α_k ĝ_k,   α_k = max_j ‖ĝ_j‖ / ‖ĝ_k‖,

    so every task pulls with the same strength, the strongest one's (LibMTL's ``DB_MTL``, whose
    ``1e-8`` guard on ``‖ĝ_k‖`` is kept). The averages are a (K, N) buffer, so DB-MTL runs in
    ``parameters`` mode only (as in LibMTL). A task absent from a batch keeps its average and
    takes no part. Task-specific parameters take the raw gradient of their log loss; the
    weight reported is ``α_k / L_k`` (the factor on the raw loss's averaged gradient).

    Args:
        tasks: names of all tasks, in order.
        beta: ``β`` in (0, 1); 0.9 as LibMTL.
        beta_sigma: ``σ`` >= 0, the decay power of ``β_t``; 0 (a constant rate) as LibMTL.
        mode, engine: see :class:`~attnmtl.weighting.gradient.GradientBased` (log losses are
            part of the method).
    """

    modes = ("parameters",)
    row_buffers = ("averages",)
    averages: Tensor
    steps: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        beta: float = 0.9,
        beta_sigma: float = 0.0,
        mode: Mode = "parameters",
        engine: Engine = "batched",
    ) -> None:
        super().__init__(tasks, mode=mode, engine=engine, log_losses=True)
        if isinstance(beta, bool) or not (0.0 <= float(beta) < 1.0):
            raise ValueError(f"beta={beta!r}; expected a number in [0, 1)")
        check_positive("beta_sigma", beta_sigma, allow_zero=True)
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.register_buffer("averages", torch.zeros(0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def direction(self, rows: Rows, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        """Average the log-loss gradients, rescale each to the largest norm, sum."""
        grads = rows.matrix
        self.steps += 1
        rate = self.beta / float(self.steps) ** self.beta_sigma
        idx = torch.tensor(index, device=grads.device)
        averages = self.row_buffer("averages", grads)
        if index == list(range(len(self.tasks))):  # every task: in place
            mean = averages.lerp_(grads, 1 - rate)  # g + β_t (ĝ − g)
        else:
            mean = averages[idx].lerp_(grads, 1 - rate)
            averages[idx] = mean
        norms = mean.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        return alpha @ mean, alpha.to(losses.dtype)
