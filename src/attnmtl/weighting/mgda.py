"""MGDA and MGDA-UB: the min-norm point of the task gradients' convex hull.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode
from attnmtl.weighting.registry import register_weighting
from attnmtl.weighting.solvers import min_norm

Normalization = Literal["none", "l2", "loss", "loss+"]
NORMALIZATIONS: tuple[Normalization, ...] = ("none", "l2", "loss", "loss+")


@register_weighting("mgda")
class MGDA(GradientWeighting):
    """Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

    The multiple-gradient descent algorithm (Désidéri 2012) steps along the minimum-norm
    element of the convex hull of the task gradients:

        w* = argmin_{w ∈ Δ_K} ‖Σ_k w_k g_k‖² = argmin_{w ∈ Δ_K} wᵀ (GGᵀ) w,   d = Σ_k w*_k g_k.

    ``d`` is a descent direction for every task (``g_kᵀd ≥ ‖d‖²``), and ``d = 0`` exactly at a
    Pareto-stationary point. The paper solves the problem with Frank-Wolfe (its Algorithm 2,
    with the closed form for two tasks as the line search); we solve it exactly with Wolfe's
    active-set min-norm-point algorithm (:func:`~attnmtl.weighting.solvers.min_norm`), a few
    linear solves of size ≤ K + 1.

    MGDA-UB, the paper's upper bound (its Theorem 1), replaces the gradients of the shared
    parameters by those at the shared representation Z, so one backward pass through the
    encoder serves every task: that is ``mode="features"`` (registered as ``mgda_ub``).

    The official code can normalise each gradient before solving (``normalization``):
    ``l2`` by its norm, ``loss`` by the task's loss, ``loss+`` by loss × norm; the solution
    then weights the normalised gradients, ``c_k = w*_k / n_k``. The default is the paper's
    definition (``none``). Weights lie on the simplex (they sum to 1, where equal weighting's
    sum to K). Task-specific parameters receive their own task's gradient unweighted, as in
    the paper's Algorithm 2.

    Args:
        tasks: names of all tasks, in order.
        normalization: ``none`` | ``l2`` | ``loss`` | ``loss+``, as above.
        mode: ``parameters`` or ``features`` (MGDA-UB).
        update_every: reuse the weights for this many steps (1: solve every step).
        engine: ``batched`` or ``loop`` (the naive reference).
        log_losses: MGDA on the gradients of ``log L_k``, as FAMO's code runs it (see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        normalization: Normalization = "none",
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization={normalization!r}; expected one of: {', '.join(NORMALIZATIONS)}"
            )
        self.normalization: Normalization = normalization

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """The min-norm weights of the (normalised) gradients."""
        norms = torch.diagonal(gram).clamp_min(0.0).sqrt()
        if self.normalization == "none":
            n = torch.ones_like(norms)
        elif self.normalization == "l2":
            n = norms
        elif self.normalization == "loss":
            n = losses
        else:
            n = losses * norms
        n = torch.where(n > 0, n, torch.ones_like(n))  # a zero gradient or loss stays as is
        w = min_norm(gram / (n[:, None] * n[None, :]))
        return w / n


@register_weighting("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun 2018, Theorem 1): :class:`MGDA` on the gradients at the shared
    representation, one backward pass through the encoder per step.

    The same as ``mgda`` with ``mode="features"``; see :class:`MGDA` for the arguments.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        normalization: Normalization = "none",
        mode: Mode = "features",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks,
            normalization,
            mode=mode,
            update_every=update_every,
            engine=engine,
            log_losses=log_losses,
        )
