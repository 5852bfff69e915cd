"""SDMGrad: stochastic direction-oriented multi-objective gradient descent.

Axes: S = 3 independent estimates, K tasks present in the batch, P shared parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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
from attnmtl.weighting.solvers import simplex_projection_np


@register_weighting("sdmgrad")
class SDMGrad(SampledWeighting):
    """Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable
    Stochastic Algorithms", NeurIPS 2023.

    SDMGrad keeps the update close to a target direction, the mean gradient ``g₀``, while
    making progress on every task: the weights solve
    ``min_{w ∈ Δ} ½‖Gᵀw + λ g₀‖²`` by projected stochastic gradient steps whose gradient
    ``G_{ξ₁} G_{ξ₂}ᵀ w + λ G_{ξ₁} g₀,ξ₂`` is unbiased (two independent samples ξ₁, ξ₂), and the
    update uses a third, ζ:

        d = (G_ζᵀ w + λ g₀,ζ) / (1 + λ),   g₀,ζ = mean_k g_{ζ,k}.

    As LibMTL's ``SDMGrad`` (the authors' code): ``GG = G_{ξ₁} G_{ξ₂}ᵀ`` divided by the squared
    mean of ``√diag(GG)``, ``niter`` steps of SGD (learning rate 5, momentum 0.5, restarted each
    step) on ``GG w + λ mean_j GG_{:,j}`` each followed by the projection onto the simplex,
    ``w`` kept across steps from 1/K. Only ``G_ξ₁ G_ξ₂ᵀ`` is needed, never the matrices:
    where the parts' forward passes are recorded (the Trainer, :meth:`Weighting.step`, the
    benchmark; one process), each shared ``nn.Linear`` contributes its block from its inputs
    and its output's per-task cotangents
    (:meth:`~attnmtl.weighting.gradient.PartGradients.gram`), the other shared parameters from
    their rows; elsewhere, and with ``engine: loop``, both matrices are taken as rows. The
    update is one backward pass of ``cᵀ`` the ζ part's losses. A task absent from a batch
    keeps its share of ``w``. The weights reported are each task's coefficient in ``d``,
    ``(w_k + λ/K) / (1 + λ)``; the conflict log reads ``½(G_ξ₁G_ξ₂ᵀ + G_ξ₂G_ξ₁ᵀ)``, an
    unbiased estimate of the Gram matrix of the expected gradients
    (:meth:`~attnmtl.weighting.base.GradientStats.from_gram` says how it is read).

    Args:
        tasks: names of all tasks, in order.
        lamda: ``λ`` >= 0, the pull towards the mean gradient; 0.3 as LibMTL.
        niter: projected steps on ``w`` per training step, >= 1; 20 as LibMTL.
        mode, engine, log_losses: see :class:`~attnmtl.weighting.gradient.SampledWeighting`.
    """

    samples = 3
    records_parts = True
    weights: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        lamda: float = 0.3,
        niter: int = 20,
        mode: Mode = "parameters",
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks, mode=mode, engine=engine, log_losses=log_losses)
        check_positive("lamda", lamda, allow_zero=True)
        if isinstance(niter, bool) or not isinstance(niter, int) or niter < 1:
            raise ValueError(f"niter={niter!r}; expected an integer >= 1")
        self.lamda, self.niter = float(lamda), niter
        k = len(self.tasks)
        self.register_buffer("weights", torch.full((k,), 1.0 / k, dtype=torch.float64))

    def solve_weights(self, gram: Tensor, start: Tensor) -> Tensor:
        """``niter`` projected SGD steps (lr 5, momentum 0.5) from ``start`` on the normalised
        ``GG``, in float64 on the host (K×K: a device round trip per step, not per
        iteration)."""
        g = gram.detach().double().cpu().numpy()
        g = g / (np.sqrt(np.clip(np.diag(g), 0, None)).mean() ** 2 + 1e-8)
        pull = g.mean(1)
        w = start.detach().double().cpu().numpy()
        velocity = np.zeros_like(w)
        for i in range(self.niter):
            step = g @ w + self.lamda * pull
            velocity = step if i == 0 else 0.5 * velocity + step
            w = simplex_projection_np(w - 5.0 * velocity)
        return torch.from_numpy(w).to(start)

    def direction(
        self, parts: PartGradients, losses: Tensor, index: list[int]
    ) -> tuple[Tensor, Tensor]:
        """The weights from ``G_ξ₁ G_ξ₂ᵀ`` (:meth:`PartGradients.gram`); the update ``G_ζᵀc``
        (one combination)."""
        idx = torch.tensor(index, device=self.weights.device)
        old = self.weights[idx]
        w = old / old.sum() if float(old.sum()) > 0 else torch.full_like(old, 1 / len(index))
        gram = parts.gram(1, 2)
        if not bool(torch.isfinite(gram).all()):
            return parts.combined(0, torch.ones_like(w)), torch.ones_like(losses)
        w = self.solve_weights(gram, w)
        self.weights[idx] = keep_mass(old, w)
        c = (w + self.lamda / len(index)) / (1 + self.lamda)
        return parts.combined(0, c), c.to(losses.dtype)
