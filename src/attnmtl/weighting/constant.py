"""Constant weighting: fixed per-task weights given in the config.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.registry import register_weighting


@register_weighting("constant")
class ConstantWeighting(Weighting):
    """``L = Σ_k w_k L_k`` with fixed weights ``w_k`` ("linear scalarization" with hand-set
    weights, the baseline of Sener & Koltun, NeurIPS 2018, and of every grid search over task
    weights). ``equal`` is the case ``w_k = 1``.

    Args:
        tasks: names of all tasks, in order.
        weights: task → its weight (a finite number ≥ 0); a task left out gets 1.
    """

    weights: Tensor  # (K,) per task, in ``tasks`` order

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(tasks)
        given = dict(weights or {})
        unknown = [t for t in given if t not in self.tasks]
        if unknown:
            raise ValueError(
                f"weights for {unknown}; expected some of the tasks {list(self.tasks)}"
            )
        for task, weight in given.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ValueError(f"weights.{task}={weight!r}; expected a number >= 0")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weights.{task}={weight!r}; expected a finite number >= 0")
        self.register_buffer(
            "weights", torch.tensor([float(given.get(t, 1.0)) for t in self.tasks]), False
        )

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Combine as ``Σ w_k L_k`` over the present tasks and backpropagate."""
        order = self.present(losses)
        stacked = torch.stack([losses[t] for t in order])  # (K,)
        index = torch.tensor([self.index(t) for t in order], device=self.weights.device)
        weights = self.weights[index].to(stacked)  # (K,)
        ctx.scale((weights * stacked).sum()).backward()
        return dict(zip(order, weights.unbind(), strict=True))
