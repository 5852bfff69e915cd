"""STCH: smooth Tchebycheff scalarisation of the (normalised, log) task losses.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from attnmtl.weighting.base import LOSS_FLOOR, StepContext, Weighting
from attnmtl.weighting.gradient import check_positive
from attnmtl.weighting.registry import register_weighting


@register_weighting("stch")
class STCH(Weighting):
    """Lin, Zhang, Liu, Zhang & Kwong, "Smooth Tchebycheff Scalarization for Multi-Objective
    Optimization", ICML 2024.

    Tchebycheff scalarisation minimises the worst task, ``max_k λ_k (f_k − z*_k)``, which can
    reach every Pareto-optimal point (linear scalarisation cannot on a non-convex front) but
    is non-smooth. STCH replaces the max by its smooth upper bound, the log-sum-exp with
    smoothing ``μ`` (the paper's Eq. 8):

        g_μ = μ log Σ_k exp(λ_k (f_k − z*_k) / μ),

    which tends to the max as ``μ → 0`` and to the mean as ``μ → ∞``. For multi-task learning
    the authors' code (LibMTL's ``STCH``) uses ``f_k = log(L_k / z_k)`` with ``z_k`` each
    task's mean loss over a warm-up (a nadir point, so every task starts at 0), the ideal point
    ``z* = 0``, uniform preferences, and the result times K: ``L = K μ logsumexp(f / μ)``.
    During the warm-up the loss is ``Σ_k log L_k``. Computed with the max subtracted inside the
    exponential. The weight reported is ``∂L/∂L_k``: ``K softmax_k(f/μ) / L_k`` (``1 / L_k``
    during the warm-up).

    Warm-up: the first ``warmup_epochs`` epochs train ``Σ log L_k``, and each task's ``z_k`` is
    its mean loss over the last of them (LibMTL's ``STCH_warmup_epoch=4`` is
    ``warmup_epochs=5`` here: it counts the epoch that averages). A task without a labelled
    batch in that epoch gets ``z_k = 1``. ``warmup_epochs=0`` skips the warm-up (``z = 1``).

    Args:
        tasks: names of all tasks, in order.
        mu: ``μ`` > 0; 1.0 as LibMTL.
        warmup_epochs: epochs of log-loss training before STCH, >= 0; 5, as LibMTL's default.
    """

    loss_sums: Tensor
    loss_counts: Tensor
    nadir: Tensor
    ready: Tensor

    def __init__(self, tasks: Sequence[str], mu: float = 1.0, warmup_epochs: int = 5) -> None:
        super().__init__(tasks)
        check_positive("mu", mu)
        if (
            isinstance(warmup_epochs, bool)
            or not isinstance(warmup_epochs, int)
            or warmup_epochs < 0
        ):
            raise ValueError(f"warmup_epochs={warmup_epochs!r}; expected an integer >= 0")
        self.mu = float(mu)
        self.warmup_epochs = warmup_epochs
        k = len(self.tasks)
        self.register_buffer("loss_sums", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("loss_counts", torch.zeros(k, dtype=torch.long))
        self.register_buffer("nadir", torch.ones(k, dtype=torch.float64))
        self.register_buffer("ready", torch.tensor(warmup_epochs == 0))

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """``Σ log L_k`` in the warm-up, ``K μ logsumexp(log(L_k/z_k)/μ)`` after it."""
        order = self.present(losses)
        idx = torch.tensor([self.index(t) for t in order], device=self.nadir.device)
        stacked = torch.stack([losses[t] for t in order]).clamp_min(LOSS_FLOOR)  # (K,)
        if ctx.epoch < self.warmup_epochs:
            if ctx.epoch == self.warmup_epochs - 1:  # the epoch whose mean is the nadir
                self.loss_sums[idx] += stacked.detach().to(self.loss_sums.dtype)
                self.loss_counts[idx] += 1
            ctx.scale(stacked.log().sum()).backward()
            weights = 1.0 / stacked.detach()
            return dict(zip(order, weights.unbind(), strict=True))
        if not bool(self.ready):
            counts = self.loss_counts.to(self.loss_sums.dtype)
            self.nadir.copy_(torch.where(counts > 0, self.loss_sums / counts.clamp_min(1), 1.0))
            self.ready.fill_(True)
        nadir = self.nadir[idx].to(stacked.dtype)
        scores = (stacked / nadir).log() / self.mu  # (K,)
        k = len(order)
        total = k * self.mu * torch.logsumexp(scores, 0)
        ctx.scale(total).backward()
        weights = (k * torch.softmax(scores.detach(), 0)) / stacked.detach()
        return dict(zip(order, weights.unbind(), strict=True))
