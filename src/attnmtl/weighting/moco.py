"""MoCo: multi-objective gradient correction with tracked gradients.

Axes: K tasks present in the batch, N shared parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import (
    Engine,
    Mode,
    Rows,
    RowWeighting,
    check_positive,
    gram_of,
)
from attnmtl.weighting.registry import register_weighting
from attnmtl.weighting.solvers import simplex_projection


def keep_mass(old: Tensor, new: Tensor) -> Tensor:
    """``new`` (summing to 1) rescaled to the mass the present tasks had in ``old``, so the
    absent tasks keep their share (a present set with no mass left gets its fair share)."""
    mass = old.sum()
    return new * (mass if float(mass) > 0 else torch.ones_like(mass))


@register_weighting("moco")
class MoCo(RowWeighting):
    """Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach", ICLR 2023.

    MGDA's weights computed from stochastic gradients are biased (the min-norm problem is
    non-linear in the gradients). MoCo tracks each task's gradient with a moving estimate and
    moves the weights by one projected gradient step per iteration (its Algorithm 1):

        y_k ← y_k − β_t (y_k − g_k),
        λ ← Π_Δ(λ − γ_t (YYᵀ + ρI) λ),
        d = Yᵀλ,

    with ``β_t = β / t^σ_β``, ``γ_t = γ / t^σ_γ`` (t = 1, 2, ... the strategy's steps),
    ``y_k = 0`` and ``λ = 1/K`` at the start, ``Π_Δ`` the projection onto the simplex
    (:func:`~attnmtl.weighting.solvers.simplex_projection`). ``normalize=True`` first replaces
    each ``g_k`` by ``L_k g_k / ‖g_k‖``, as LibMTL's MoCo does (LibMTL also replaces the
    projection by a softmax; the projection here is the paper's). The tracked gradients are a
    (K, N) buffer, so MoCo runs in ``parameters`` mode only. A task absent from a batch keeps
    its ``y_k`` and its share of ``λ``; the present tasks' ``λ`` take the step on their own
    simplex. Task-specific parameters take their own raw gradient; the weights reported are
    ``λ``.

    Args:
        tasks: names of all tasks, in order.
        beta, beta_sigma: the tracking rate ``β`` and its decay power (0.5, 0.5 as LibMTL).
        gamma, gamma_sigma: the weights' step ``γ`` and its decay power (0.1, 0.5).
        rho: ``ρ`` >= 0, the regulariser (0).
        normalize: rescale each gradient to its loss, as LibMTL (False: the paper's).
        mode, engine, log_losses: see :class:`~attnmtl.weighting.gradient.GradientBased`.
    """

    modes = ("parameters",)
    row_buffers = ("tracked",)
    tracked: Tensor
    lambdas: Tensor
    steps: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        normalize: bool = False,
        mode: Mode = "parameters",
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks, mode=mode, engine=engine, log_losses=log_losses)
        check_positive("beta", beta)
        check_positive("gamma", gamma)
        for name, value in (("beta_sigma", beta_sigma), ("gamma_sigma", gamma_sigma)):
            check_positive(name, value, allow_zero=True)
        check_positive("rho", rho, allow_zero=True)
        if beta > 1:
            raise ValueError(f"beta={beta!r}; expected a number in (0, 1]")
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.gamma, self.gamma_sigma = float(gamma), float(gamma_sigma)
        self.rho = float(rho)
        self.normalize = bool(normalize)
        k = len(self.tasks)
        self.register_buffer("tracked", torch.zeros(0))
        self.register_buffer("lambdas", torch.full((k,), 1.0 / k, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def direction(self, rows: Rows, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        """Track the gradients, step the weights, ``d = Yᵀλ``."""
        grads = rows.matrix
        if self.normalize:
            scale = losses.to(grads.dtype) / (grads.norm(dim=1) + 1e-8)
            grads = grads * scale[:, None]
        self.steps += 1
        t = float(self.steps)
        idx = torch.tensor(index, device=grads.device)
        tracked = self.row_buffer("tracked", grads)
        rate = self.beta / t**self.beta_sigma
        if index == list(range(len(self.tasks))):  # every task: update the buffer in place
            y = tracked.lerp_(grads, rate)  # y − β_t (y − g)
        else:
            y = tracked[idx].lerp_(grads, rate)
            tracked[idx] = y
        old = self.lambdas[idx]
        lam = old / old.sum() if float(old.sum()) > 0 else torch.full_like(old, 1 / len(index))
        yy = gram_of([y])
        yy.diagonal().add_(self.rho)
        lam = simplex_projection(lam - self.gamma / t**self.gamma_sigma * (yy @ lam))
        self.lambdas[idx] = keep_mass(old, lam)
        return lam.to(y.dtype) @ y, lam.to(losses.dtype)
