"""SDMGrad: stochastic direction-oriented multi-objective gradient descent.

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
    ``w`` kept across steps from 1/K. ``G_ξ₁`` and ``G_ξ₂`` are taken as rows, the update as one
    backward pass of ``cᵀ`` the ζ part's losses (2K + 1 rows a step where the three matrices
    take 3K). A task absent from a batch keeps its share of ``w``. The
    weights reported are each task's coefficient in ``d``, ``(w_k + λ/K) / (1 + λ)``.

    Args:
        tasks: names of all tasks, in order.
        lamda: ``λ`` >= 0, the pull towards the mean gradient; 0.3 as LibMTL.
        niter: projected steps on ``w`` per training step, >= 1; 20 as LibMTL.
        mode, engine, log_losses: see :class:`~attnmtl.weighting.gradient.SampledWeighting`.
    """

    samples = 3
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
        ``GG``."""
        diag = gram.diagonal().clamp_min(0)
        gram = gram / (diag.sqrt().mean() ** 2 + 1e-8)
        pull = gram.mean(1)
        w, velocity = start, torch.zeros_like(start)
        for i in range(self.niter):
            step = gram @ w + self.lamda * pull
            velocity = step if i == 0 else 0.5 * velocity + step
            w = simplex_projection(w - 5.0 * velocity)
        return w

    def direction(
        self, parts: PartGradients, losses: Tensor, index: list[int]
    ) -> tuple[Tensor, Tensor]:
        """The weights from ξ₁, ξ₂ (rows); the update ``G_ζᵀc`` (one combination): 2K + 1
        gradient rows in all, not 3K."""
        idx = torch.tensor(index, device=self.weights.device)
        old = self.weights[idx]
        w = old / old.sum() if float(old.sum()) > 0 else torch.full_like(old, 1 / len(index))
        gram = (parts.rows(1) @ parts.rows(2).T).double()
        if not bool(torch.isfinite(gram).all()):
            return parts.combined(0, torch.ones_like(w)), torch.ones_like(losses)
        w = self.solve_weights(gram, w)
        self.weights[idx] = keep_mass(old, w)
        c = (w + self.lamda / len(index)) / (1 + self.lamda)
        return parts.combined(0, c), c.to(losses.dtype)
