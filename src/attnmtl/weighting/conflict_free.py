"""ConFIG: the conflict-free update with equal cosine to every task's gradient.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnmtl.weighting.gradient import GradientWeighting
from attnmtl.weighting.registry import register_weighting

# Singular values of the unit gradients' Gram matrix below this (relative to its largest) are
# dropped by the pseudo-inverse, as collinear gradients leave the direction undetermined.
_RCOND = 1e-10


@register_weighting("config")
class ConFIG(GradientWeighting):
    """Liu, Thuerey et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks", ICLR 2025 (arXiv:2408.11104, 2024).

    With ``U`` (K, N) the unit task gradients ``u_k = g_k / ‖g_k‖``, the direction
    ``v = U⁺1`` has the same inner product (1) with every ``u_k``: it makes an equal, positive
    angle with every task's gradient, so no task is in conflict with the update and none is
    favoured. Its length comes from the projections of the gradients on it: with ``v̂ = v/‖v‖``,
    ``d = (Σ_k g_kᵀv̂) v̂`` (the paper's Eq. 3; torchjd's ``ConFIG`` with its default sum
    weighting). In Gram form, with ``C`` the unit gradients' Gram matrix and ``β = C⁺1``,
    ``v = Uᵀβ``, ``‖v‖² = βᵀCβ``, ``Gv = ‖g‖ ∘ Cβ``, so ``d = cᵀG`` with
    ``c_k = (1ᵀGv / ‖v‖²) β_k / ‖g_k‖``. A zero gradient takes no part (its ``c_k`` is 0).
    ConFIG has no hyperparameters; task-specific parameters take their own raw gradient.

    Args:
        tasks: names of all tasks, in order.
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`.
    """

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``c = (1ᵀGv/‖v‖²) β/‖g‖`` with ``β = C⁺1``."""
        norm = gram.diagonal().clamp_min(0).sqrt()
        inv = norm.reciprocal().nan_to_num(posinf=0.0)
        unit = gram * inv[:, None] * inv[None, :]  # C (zero rows for zero gradients)
        live = (norm > 0).to(gram.dtype)
        beta = torch.linalg.pinv(unit, rtol=_RCOND, hermitian=True) @ live
        projected = unit @ beta  # Uv = Cβ, (K,)
        length2 = beta @ projected  # ‖v‖²
        if float(length2) <= 0:
            return torch.zeros_like(norm)
        return (norm @ projected) / length2 * beta * inv
