"""MOML: task weights meta-learnt for every task's held-out loss at once, by MGDA.

Axes: J held-out objectives (the primary tasks), K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from attnmtl.weighting.auto_lambda import AutoLambda
from attnmtl.weighting.registry import register_weighting
from attnmtl.weighting.solvers import min_norm


@register_weighting("moml")
class MOML(AutoLambda):
    """Ye, Lin, Zhang, Sugiyama, Zhang & Yang, "Multi-Objective Meta Learning", NeurIPS 2021
    (the multi-task form, as in LibMTL's authors' experiments).

    Auto-Lambda's bilevel problem with the upper level made multi-objective: instead of one
    summed held-out loss, every primary task's held-out loss ``L_val_j`` is an objective of
    ``λ``. Each has its look-ahead hypergradient (as :class:`AutoLambda`, one finite-difference
    Hessian-vector product per objective: ``H_jk = ∂L_val_j(θ')/∂λ_k``), and ``λ`` steps along
    their MGDA direction, the min-norm point of the rows' convex hull
    (:func:`~attnmtl.weighting.solvers.min_norm`): no task's held-out loss increases to first
    order. Costs J held-out backward passes and 2J forward passes per meta step (``update_every``
    spreads them).

    Args:
        tasks: names of all tasks, in order.
        primary: the tasks whose held-out losses are the objectives; None: every task.
        init: the starting ``λ_k`` (0.1).
        meta_lr: Adam's learning rate for ``λ`` (1e-4).
        update_every: take the meta step every this many steps (1).
    """

    def objectives(self, val: Mapping[str, Tensor]) -> list[Tensor]:
        """Every primary task's held-out loss, each its own objective."""
        return [val[t] for t in self.primary if t in val]

    def combine_hypergradients(self, matrix: Tensor) -> Tensor:
        """The MGDA direction of the objectives' hypergradients (J, K) → (K,)."""
        weights = min_norm(matrix @ matrix.T)
        return weights @ matrix
