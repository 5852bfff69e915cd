"""IMTL-L: learnable loss scales that drive every scaled loss towards 1.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.registry import register_weighting


def scaled_loss(log_scale: Tensor, losses: Tensor) -> Tensor:
    """IMTL-L's objective ``Σ_t e^{s_t} L_t − s_t`` for scales ``s`` (K,) and losses (K,)."""
    return (log_scale.exp().to(losses.dtype) * losses - log_scale.to(losses.dtype)).sum()


@register_weighting("imtl_l")
class IMTLL(Weighting):
    """IMTL-L, the loss balance of Liu et al., "Towards Impartial Multi-task Learning",
    ICLR 2021 (§3.2), on its own.

    Each task's loss is scaled as ``e^{s_t} L_t − s_t`` with a learnable ``s_t`` (0 at the
    start). Its gradient in ``s_t``, ``e^{s_t} L_t − 1``, vanishes where the scaled loss is 1,
    so every task's scaled loss is driven to the same value whatever the raw loss's unit. One
    backward pass, no per-task gradients; the same as ``imtl`` with ``variant: l``. Each ``s_t``
    is its own scalar parameter (``log_scales.<t>``): a task absent from a batch gets no
    gradient. The weight reported is ``e^{s_t}``.

    Args:
        tasks: names of all tasks, in order.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        self.log_scales = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in self.tasks)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Backpropagate ``Σ_t e^{s_t} L_t − s_t``; report ``e^{s_t}``."""
        order = self.present(losses)
        log_scale = torch.stack([self.log_scales[self.index(t)] for t in order])  # (K,)
        stacked = torch.stack([losses[t] for t in order])
        ctx.scale(scaled_loss(log_scale, stacked)).backward()
        factor = log_scale.detach().exp()
        return dict(zip(order, factor.unbind(), strict=True))
