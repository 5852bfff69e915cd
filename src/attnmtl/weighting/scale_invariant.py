"""Scale-invariant weighting: the sum of the task losses' logarithms.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attnmtl.weighting.base import LOSS_FLOOR, StepContext, Weighting
from attnmtl.weighting.registry import register_weighting


@register_weighting("scale_invariant")
class ScaleInvariantWeighting(Weighting):
    """``L = Σ_k log L_k``: the "scale-invariant" baseline of Navon et al., "Multi-Task
    Learning as a Bargaining Game" (ICML 2022), and of Liu et al., "FAMO" (NeurIPS 2023), which
    builds on it. Multiplying a task's loss by any c > 0 adds log c to L and leaves the gradient
    unchanged; each task is weighted by ``1 / L_k``, the weights returned. Losses are floored
    at 1e-12 (attnmtl's losses are ≥ 0).

    Args:
        tasks: names of all tasks, in order.
    """

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Combine as ``Σ log L_k`` over the present tasks and backpropagate."""
        order = self.present(losses)
        stacked = torch.stack([losses[t] for t in order]).clamp_min(LOSS_FLOOR)  # (K,)
        ctx.scale(stacked.log().sum()).backward()
        weights = (1.0 / stacked).detach()  # (K,) ∂L/∂L_k
        return dict(zip(order, weights.unbind(), strict=True))
