"""Random loss weighting (RLW): fresh random task weights at every step.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attnmtl.core.distributed import agree
from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.registry import register_weighting


@register_weighting("rlw")
class RandomLossWeighting(Weighting):
    """Lin, Ye, Xu, et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning", TMLR 2022.

    At every step the weights are ``softmax(λ̃)`` with ``λ̃ ~ N(0, I)`` over the tasks present in
    the batch (the paper's default distribution), so they are positive and sum to 1. The paper
    uses RLW as a litmus test: a balancing method that does not beat random weights has not
    shown that its weighting matters.

    The draws come from torch's global generator on the losses' device, so restoring the RNG
    state from a checkpoint makes a resumed run draw the same weights; under torchrun every
    process uses rank 0's draw. The strategy has no state of its own.

    Args:
        tasks: names of all tasks, in order.
    """

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Draw the weights, combine as ``Σ λ_k L_k``, backpropagate."""
        order = self.present(losses)
        stacked = torch.stack([losses[t] for t in order])  # (K,)
        draws = agree(lambda: torch.randn(len(order), device=stacked.device), ctx.job)  # (K,)
        weights = torch.softmax(draws, dim=0).to(stacked.dtype)  # (K,)
        ctx.scale((weights * stacked).sum()).backward()
        return dict(zip(order, weights.unbind(), strict=True))
