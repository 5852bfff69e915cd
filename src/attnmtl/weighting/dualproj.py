"""DualProj: the mean gradient projected onto the dual cone of the task gradients.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode
from attnmtl.weighting.registry import register_weighting
from attnmtl.weighting.upgrad import cone_projection, preference, set_preference, unit_gram


@register_weighting("dualproj")
class DualProj(GradientWeighting):
    """The projection of GEM (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual
    Learning", NeurIPS 2017, Eq. 11) applied to multi-task learning, as in torchjd's
    ``DualProj`` (Quinton & Rey 2024).

    ``d = π_C(Σ_k w_k g_k)``, the Euclidean projection of the weighted mean gradient onto the
    dual cone ``C = {x : ⟨g_j, x⟩ >= 0 for all j}``: the update closest to the mean gradient
    that increases no task's loss to first order. Where :class:`~attnmtl.weighting.UPGrad`
    projects every gradient and averages the projections, DualProj averages first and
    projects once. In Gram form ``π_C(Gᵀw) = Gᵀ(w + λ)`` with ``λ >= 0`` the multipliers of
    the constraints, solved exactly by UPGrad's active-set method
    (:func:`~attnmtl.weighting.upgrad.cone_projection`) on the unit gradients' Gram matrix;
    without a conflict the mean is already in the cone and ``d`` is the mean.

    Args:
        tasks: names of all tasks, in order.
        weights: ``w``, one non-negative weight per task (not all zero); None (default):
            ``1/K`` for each of the K tasks present (torchjd's mean).
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`.
    """

    preference: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Sequence[float] | None = None,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        set_preference(self, weights)

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``c = w + λ``: the weighted mean's projection onto the dual cone."""
        w = preference(self, index, gram)
        norm, inv, unit = unit_gram(gram)
        u = (w * norm)[None]  # (1, K): x = Gᵀw = Ûᵀ(w ∘ ‖g‖) in unit coordinates
        b = u @ unit  # (1, K): ⟨ĝ_j, x⟩
        if not bool((b < 0).any()):  # the mean conflicts with no task: it is in the cone
            return w
        lam = cone_projection(unit, b < 0, b)[0]  # (K,) multipliers on the unit gradients
        return w + lam * inv
