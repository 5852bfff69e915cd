"""Geometric loss strategy (GLS): the geometric mean of the task losses.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attnmtl.weighting.base import LOSS_FLOOR, StepContext, Weighting
from attnmtl.weighting.registry import register_weighting


@register_weighting("gls")
class GeometricLossStrategy(Weighting):
    """Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation
    and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019.

    ``L = (Π_k L_k)^(1/K)`` over the K tasks present in the batch. Its gradient weighs each task
    by ``∂L/∂L_k = L / (K L_k)``: a task whose loss is small gets a large weight, so every task's
    *relative* progress counts alike and no task's scale dominates (multiplying one loss by c
    multiplies L by c^(1/K) and leaves the weights' ratios unchanged). Computed in log space,
    ``exp(mean_k log L_k)``, so a product of many small losses does not underflow; losses are
    floored at 1e-12 (attnmtl's losses are ≥ 0). The returned weights are ``L / (K L_k)``.

    Args:
        tasks: names of all tasks, in order.
    """

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Combine as the geometric mean of the present tasks' losses and backpropagate."""
        order = self.present(losses)
        stacked = torch.stack([losses[t] for t in order]).clamp_min(LOSS_FLOOR)  # (K,)
        total = stacked.log().mean().exp()
        ctx.scale(total).backward()
        weights = (total / (len(order) * stacked)).detach()  # (K,) ∂L/∂L_k
        return dict(zip(order, weights.unbind(), strict=True))
