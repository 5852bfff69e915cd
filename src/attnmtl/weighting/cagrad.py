"""Conflict-averse gradient descent (CAGrad): the best worst-case improvement near the mean.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode, check_positive
from attnmtl.weighting.registry import register_weighting
from attnmtl.weighting.upgrad import RIDGE, ball_projection

RESCALES = (0, 1, 2)


@register_weighting("cagrad")
class CAGrad(GradientWeighting):
    """Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
    NeurIPS 2021.

    With ``g0 = (1/K) Σ_i g_i`` the mean gradient, CAGrad takes the update that maximises the
    worst local improvement of any task within a ball around ``g0``:
    ``d = argmax_{‖d - g0‖ <= c‖g0‖} min_i ⟨g_i, d⟩``. The paper solves its dual,
    ``w = argmin_{w ∈ simplex} ⟨g_w, g0⟩ + c‖g0‖‖g_w‖`` with ``g_w = Σ_i w_i g_i``, and sets
    ``d = g0 + (c‖g0‖ / ‖g_w‖) g_w``; ``c = 0`` is gradient descent on the mean loss, and for
    ``c < 1`` the method converges to a stationary point of it (``c >= 1`` gives up that
    guarantee and approaches MGDA). The official code (``cagrad`` in ``nyuv2/utils.py`` of
    github.com/Cranial-XIX/CAGrad) solves the dual with scipy's SLSQP and returns
    ``d / (1 + c²)`` (``rescale=1``, the one its experiments use), ``d`` (``0``) or
    ``d / (1 + c)`` (``2``), and then multiplies by K "to match the sum loss"; we return the
    same update: ``c_coef = K (1/K + λ) / s`` with ``s`` the rescale factor, so ``c = 0`` gives
    every task coefficient 1, the ``equal`` weighting's update. With one task,
    ``d = (1 + c) g_1``, rescaled (``(1 + c) / (1 + c²)`` with ``rescale=1``).

    We solve the primal instead, exactly: for a level ``t``, let ``d(t)`` be the projection of
    ``g0`` onto ``{d : ⟨g_i, d⟩ >= t for all i}``; the answer is ``d(t*)`` for the largest
    ``t*`` with ``‖d(t*) - g0‖ <= c‖g0‖`` (the ball is then tangent to the polyhedron at
    ``d(t*)``, which is the paper's ``d``). In Gram form ``d = g0 + Gᵀλ``, with ``λ >= 0`` the
    multipliers of the tight tasks (``λ ∝ w`` above, and ``‖Gᵀλ‖ = c‖g0‖``), found by an
    active-set method with a closed form per active set
    (:func:`~attnmtl.weighting.upgrad.ball_projection`: typically one to three K×K solves, no
    iterative solver; the official SLSQP solves the dual only to its tolerance). A task with a
    zero gradient cannot improve, so it caps ``t*`` at 0; if ``g0`` then conflicts with no
    task, ``d = g0``, as the official code gives (up to its ``1e-8`` guards). The Gram matrix
    is scaled to a unit mean diagonal and its diagonal multiplied by ``1 + 1e-12`` (the problem
    of the gradients each augmented with a private coordinate of ``1e-6`` times its own norm),
    which keeps the solves nonsingular for collinear gradients and leaves a tiny gradient's
    part of the problem as it is (``1e-12`` added to the normalised diagonal instead doubled a
    ``1e-6``-norm task's and moved the answer 20-60% off the exact primal).

    Args:
        tasks: names of all tasks, in order.
        c: the radius of the ball around ``g0``, relative to ``‖g0‖`` (the paper's ``c``; the
            official NYUv2 and Cityscapes runs use 0.4).
        rescale: 0, 1 (default, as the official experiments) or 2: divide the update by 1,
            ``1 + c²`` or ``1 + c``.
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        c: float = 0.4,
        rescale: int = 1,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        check_positive("c", c, allow_zero=True)
        if isinstance(rescale, bool) or not isinstance(rescale, int) or rescale not in RESCALES:
            raise ValueError(f"rescale={rescale!r}; expected 0, 1 or 2")
        self.c = float(c)
        self.rescale = rescale
        self.divisor = (1.0, 1.0 + self.c**2, 1.0 + self.c)[self.rescale]

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``K (1/K + λ) / s``: the update ``d = g0 + Gᵀλ``, rescaled, times K."""
        k = gram.shape[0]
        ones = torch.ones(k, dtype=gram.dtype, device=gram.device)
        if self.c == 0:  # gradient descent on the mean loss
            return ones / self.divisor
        total, trace, lowest = torch.stack((gram.sum(), gram.trace(), gram.diagonal().min()))
        total, scale, lowest = total.item(), trace.item() / k, lowest.item()
        if not (scale > 0 and total > 0):  # g0 = 0 (so is the ball): d = g0
            return ones / self.divisor
        gram = gram / scale  # unit mean diagonal
        radius2 = self.c**2 * total / scale / k**2  # (c‖g0‖)², ‖g0‖² = 1ᵀM1 / K²
        diagonal = gram.diagonal()
        floor, zero = math.inf, None
        if lowest <= 0:  # a zero gradient improves by 0 at best: t* <= 0
            floor, zero = 0.0, diagonal <= 0
            diagonal.masked_fill_(zero, 1.0)  # a dummy, never tight
        diagonal.mul_(1.0 + RIDGE)
        b = gram.mean(1)  # ⟨g_i, g0⟩
        # first guess of the tight tasks: those below the middle of [min_i b_i, t_max], where
        # t_max = min_i (b_i + c‖g0‖‖g_i‖) bounds t* from above
        top = (b + (radius2 * diagonal).sqrt()).min()
        guess = b < (b.min() + top) / 2
        if zero is not None:
            guess &= ~zero
        lam = ball_projection(gram, b, guess, floor, radius2)
        return (ones + k * lam) / self.divisor
