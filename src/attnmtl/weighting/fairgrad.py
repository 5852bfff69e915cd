"""FairGrad: the update whose utility to every task is α-fair.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode, check_positive
from attnmtl.weighting.registry import register_weighting

# Added to the diagonal, relative to the mean squared norm: where a non-negative combination
# of the gradients vanishes (a Pareto-stationary point) the system has no finite solution.
_RIDGE = 1e-10


def fairgrad_weights(gram: Tensor, alpha: float, tol: float = 1e-12, max_iter: int = 100) -> Tensor:
    """``w > 0`` (K,) with ``(GGᵀ) w = w^(-1/α)`` entrywise (Ban & Ji 2024, Eq. 4).

    The equation is the stationarity condition of the strictly convex
    ``φ(w) = ½ wᵀ(GGᵀ)w − Σ_k h(w_k)``, ``h'(w) = w^(-1/α)`` (``h = log`` for ``α = 1``,
    ``w^(1−1/α)/(1−1/α)`` otherwise), so damped Newton steps on ``φ`` (kept inside ``w > 0``,
    with an Armijo backtracking line search) converge to the unique solution, quadratically at
    the end; the official code and torchjd call SciPy's ``least_squares`` on the residual
    instead. The Gram matrix is first divided by its mean diagonal ``s`` (the solution for
    ``sM`` is ``s^(−α/(1+α))`` times that for ``M``), and the start is the exact answer for
    orthogonal gradients, ``w_k = M_kk^(−α/(1+α))``. A zero gradient gets ``w_k = 0``: it has
    no utility to share and the equation none for it.

    Args:
        gram: ``GGᵀ`` (K, K), float64.
        alpha: the fairness level, > 0 (1: proportional fairness; → ∞: max-min fairness).
        tol: stop when every residual is below ``tol`` (relative to ``w^(-1/α)``).
        max_iter: Newton steps at most.
    """
    k = gram.shape[0]
    diag = gram.diagonal()
    live = diag > 0
    w = torch.zeros(k, dtype=gram.dtype, device=gram.device)
    if not bool(live.any()):
        return w
    idx = live.nonzero().squeeze(1)
    scale = diag[idx].mean()
    m = gram.index_select(0, idx).index_select(1, idx) / scale
    m = m + torch.eye(len(idx), dtype=m.dtype, device=m.device) * _RIDGE
    p = 1.0 / alpha

    def phi(x: Tensor) -> Tensor:
        h = x.log() if alpha == 1 else x.pow(1 - p) / (1 - p)
        return 0.5 * x @ m @ x - h.sum()

    x = m.diagonal().pow(-alpha / (1 + alpha))
    value = phi(x)
    for _ in range(max_iter):
        power = x.pow(-p)
        grad = m @ x - power
        if bool((grad.abs() <= tol * power).all()):
            break
        hessian = m + torch.diag_embed(p * power / x)
        step = -torch.linalg.solve(hessian, grad)
        t = 1.0
        neg = step < 0
        if bool(neg.any()):  # stay inside w > 0
            t = min(1.0, 0.99 * float((-x[neg] / step[neg]).min()))
        slope = float(grad @ step)
        trial, trial_value = x, value
        while t > 1e-12:
            trial = x + t * step
            trial_value = phi(trial)
            if float(trial_value) <= float(value) + 1e-4 * t * slope:
                break
            t *= 0.5
        x, value = trial, trial_value
    return w.index_copy_(0, idx, x * scale.pow(-alpha / (1 + alpha)))


@register_weighting("fairgrad")
class FairGrad(GradientWeighting):
    """Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024.

    The update ``d = Gᵀw`` is shared among the tasks as a resource, each task's utility being
    ``u_k = g_kᵀd``; FairGrad picks the ``d`` that maximises the α-fair total utility
    ``Σ_k u_k^(1−α)/(1−α)`` (``Σ log u_k`` at α = 1) within a ball. Its optimality condition
    (the paper's Eq. 4) is ``(GGᵀ) w = w^(−1/α)``: every task's utility is a power of its own
    weight. ``α → 0`` tends to the sum of the gradients (linear scalarisation), ``α = 1`` is
    proportional fairness (as Nash-MTL), ``α → ∞`` is max-min fairness (every utility equal).
    Solved exactly on the Gram matrix (:func:`fairgrad_weights`). Task-specific parameters take
    their own raw gradient; the reported weights are ``w``.

    Args:
        tasks: names of all tasks, in order.
        alpha: ``α`` > 0; 1.0 as in LibMTL and torchjd's examples (the paper tunes 1 or 2).
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        alpha: float = 1.0,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        check_positive("alpha", alpha)
        self.alpha = float(alpha)

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """The α-fair weights ``w``."""
        return fairgrad_weights(gram, self.alpha)
