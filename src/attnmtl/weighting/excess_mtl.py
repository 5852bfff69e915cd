"""ExcessMTL: task weights raised by each task's estimated excess risk.

Axes: K tasks present in the batch, N gradient entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, Mode, Rows, RowWeighting, check_positive
from attnmtl.weighting.registry import register_weighting


@register_weighting("excess_mtl")
class ExcessMTL(RowWeighting):
    """He, Sun, Zhao, Liu & Tu, "Robust Multi-Task Learning with Excess Risks", ICML 2024.

    Loss-based weighting favours tasks with large losses, which may be noise (label noise
    inflates a loss that no model can lower). ExcessMTL weighs tasks by their *excess* risk,
    the distance of the loss from its own optimum, estimated by a second-order expansion:
    ``E_k ≈ g_kᵀ H_k⁻¹ g_k``, with the diagonal Hessian approximated AdaGrad-style by the
    accumulated squared gradients (the paper's Eqs. 6–7): ``h_k ← h_k + g_k²``,
    ``E_k = Σ g_k² / √(h_k + 1e-7)``. Each estimate is divided by the task's first one (or
    its mean over ``warmup_steps``; the paper's scale processing, §3.2), and the weights take
    an exponentiated-gradient step, ``w_k ← w_k exp(η E_k / E_k⁰)``, renormalised to sum to
    K (LibMTL's convention; torchjd's weights sum to 1). The update is ``Σ_k w_k g_k``, and
    task-specific parameters take their weighted gradient (``Σ_k w_k L_k``).

    As in LibMTL, the step that sets the baseline leaves the weights alone when there is no
    warm-up; after a warm-up the first step updates them (torchjd). In ``features`` mode the
    gradients are summed over the batch first (LibMTL's representation gradients). A task
    absent from a batch keeps its accumulators and its weight's share; the step of the
    present ones is renormalised among themselves.

    Args:
        tasks: names of all tasks, in order.
        step_size: ``η`` > 0; 1e-2 as LibMTL's ``robust_step_size``.
        warmup_steps: steps per task whose estimates only build the baseline (0).
        mode, engine, log_losses: see :class:`~attnmtl.weighting.gradient.GradientBased`.
    """

    task_gradients = "weighted"
    row_buffers = ("squares",)
    squares: Tensor
    weights: Tensor
    baseline: Tensor
    warm_sum: Tensor
    counts: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        step_size: float = 1e-2,
        warmup_steps: int = 0,
        mode: Mode = "parameters",
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks, mode=mode, engine=engine, log_losses=log_losses)
        check_positive("step_size", step_size)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps!r}; expected an integer >= 0")
        self.step_size = float(step_size)
        self.warmup_steps = warmup_steps
        k = len(self.tasks)
        self.register_buffer("squares", torch.zeros(0))
        self.register_buffer("weights", torch.ones(k, dtype=torch.float64))
        self.register_buffer("baseline", torch.ones(k, dtype=torch.float64))
        self.register_buffer("warm_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(k, dtype=torch.long))

    def excess_risks(self, grads: Tensor, index: list[int]) -> Tensor:
        """``E_k`` (K,) after accumulating this step's squared gradients (K, N)."""
        idx = torch.tensor(index, device=grads.device)
        squares = self.row_buffer("squares", grads)
        square = grads.square()
        if index == list(range(len(self.tasks))):  # every task: in place
            squares.add_(square)
            total = squares
        else:
            total = squares[idx] + square
            squares[idx] = total
        return square.div_(total.add(1e-7).sqrt_()).sum(1).double()

    def direction(self, rows: Rows, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        """Estimate the excess risks, step the weights, ``d = Σ_k w_k g_k``."""
        grads = rows.matrix
        signal = grads
        if rows.features is not None:  # representation gradients: summed over the batch
            signal = grads.view(grads.shape[0], rows.features.shape[0], -1).sum(1)
        risk = self.excess_risks(signal, index)
        idx = torch.tensor(index, device=grads.device)
        seen, warm = self.counts[idx], self.warmup_steps
        self.warm_sum[idx] += torch.where(seen < warm, risk, 0.0)
        first = seen == warm
        start = self.warm_sum[idx] / warm if warm > 0 else risk
        self.baseline[idx] = torch.where(first, start, self.baseline[idx])
        moves = seen >= warm if warm > 0 else seen > 0
        ratio = risk / (self.baseline[idx] + 1e-7)
        old = self.weights[idx]
        # the exponentiated step in log space: a huge ratio saturates instead of overflowing
        logits = old.log() + torch.where(moves, self.step_size * ratio, 0.0)
        new = torch.softmax(logits, 0) * old.sum()
        self.weights[idx] = new
        self.counts[idx] += 1
        return new.to(grads.dtype) @ grads, new.to(losses.dtype)
