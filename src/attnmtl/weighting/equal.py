"""Equal weighting (EW): the plain sum of the task losses.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.registry import register_weighting


@register_weighting("equal")
class EqualWeighting(Weighting):
    """Every present task's loss with weight 1: ``L = Σ_k L_k``.

    The baseline every balancing paper compares against (e.g. "linear scalarization" in
    Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022). We sum rather than
    average, as LibMTL's EW does: the sum keeps a task's gradient the same size however many
    tasks share the batch, so a batch in which only some tasks are labelled does not inflate
    their gradients, and the learning rate means the same as in single-task training.

    Args:
        tasks: names of all tasks, in order.
    """

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Sum the present tasks' losses and backpropagate; every weight is 1."""
        order = self.present(losses)
        total = torch.stack([losses[t] for t in order]).sum()
        ctx.scale(total).backward()
        return {t: torch.ones((), dtype=total.dtype, device=total.device) for t in order}
