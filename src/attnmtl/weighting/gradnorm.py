"""GradNorm: learn task weights that equalise the tasks' gradient norms and training rates.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext
from attnmtl.weighting.gradient import (
    Engine,
    GradientWeighting,
    Mode,
    accumulate,
    check_positive,
)
from attnmtl.weighting.registry import register_weighting

# Guards the loss ratios against a zero initial loss / zero mean ratio.
_TINY = 1e-12
# The floor the weights are clamped to after an optimizer step, before renormalising.
_MIN_WEIGHT = 1e-6


@register_weighting("gradnorm")
class GradNorm(GradientWeighting):
    """Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive
    Loss Balancing in Deep Multitask Networks", ICML 2018.

    The combined loss is ``Σ_i w_i L_i`` with learnable weights ``w_i`` (initially 1). With
    ``G_W^(i) = ‖∇_W w_i L_i‖ = w_i ‖∇_W L_i‖``, their mean ``Ḡ_W``, the loss ratios
    ``L̃_i = L_i(t) / L_i(0)`` and the relative inverse training rates ``r_i = L̃_i / mean(L̃)``,
    the weights follow the gradient of ``L_grad = Σ_i |G_W^(i) − Ḡ_W r_i^α|``, the target
    ``Ḡ_W r_i^α`` held constant: ``∂L_grad/∂w_i = sign(G_W^(i) − Ḡ_W r_i^α) ‖∇_W L_i‖``. A
    task that trains slowly (large ``r_i``) is pushed towards a larger gradient norm; ``α``
    sets the strength of that restoring force.

    ``‖∇_W L_i‖ = √M_ii`` from the Gram matrix, where ``W`` is what the gradient mode
    provides: every shared parameter (``parameters``) or the shared representation
    (``features``); the paper uses the last shared layer's weights, for which the shared
    representation is the cheap stand-in. :meth:`combine` sets ``w_i.grad = ∂L_grad/∂w_i``
    (accumulated as ``backward`` does) and the trainer's optimizer, which holds
    :meth:`parameters` (learning rate ``optimizer.weighting_lr``, else ``optimizer.lr``),
    moves them. The shared update uses the current weights, ``c = w`` (``task_gradients =
    "weighted"``: the update of ``Σ w_i L_i``, so each task's own parameters get ``w_i`` times
    their gradient).

    After the optimizer step, :meth:`after_step` clamps the weights to at least 1e-6 (a step
    can overshoot below zero) and renormalises them so that ``Σ_i w_i = T``, the number of
    tasks, as the paper does. ``L_i(0)`` is the task's first observed loss (a buffer per task,
    NaN until the task is first present; checkpoints save it). Each ``w_i`` is its own scalar
    parameter (``weights.<i>``): a task absent from a step gets no gradient (the optimizer
    leaves it alone) and keeps its weight, and the renormalisation rescales only the present
    tasks' weights, to ``T`` minus the absent ones' (with every task present: to ``T``). The
    losses should be positive; so that nothing turns NaN, a negative current loss counts as 0
    and an initial loss below 1e-12 as 1e-12.

    Args:
        tasks: names of all tasks, in order.
        alpha: ``α``, the restoring force towards a common training rate (1.5, LibMTL's
            default; the paper tunes it per problem, and ``α = 0`` pulls every ``G_W^(i)``
            to the mean).
        mode: ``parameters`` or ``features`` (which gradient ``W`` is).
        update_every: update the weights every this many steps (the reused steps set no
            gradient on them).
        engine: ``batched`` or ``loop``.
        log_losses: the method on the gradients of ``log L_k`` (see :class:`GradientWeighting`).
    """

    task_gradients = "weighted"
    initial_losses: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        alpha: float = 1.5,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        check_positive("alpha", alpha, allow_zero=True)
        self.alpha = float(alpha)
        self.weights = nn.ParameterList(nn.Parameter(torch.tensor(1.0)) for _ in self.tasks)
        # L_i(0); NaN until the task is first present
        self.register_buffer(
            "initial_losses", torch.full((len(self.tasks),), math.nan, dtype=torch.float64)
        )
        self._pending: list[int] | None = None  # the tasks whose weights the step moves

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """As every gradient method's, once the previous step's :meth:`after_step` has run."""
        if self._pending is not None:
            raise self.missed_after_step()
        return super().backward(losses, ctx)

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """Set ``w.grad = ∂L_grad/∂w`` for the present tasks; return their current ``w``."""
        every = list(self.weights.parameters())  # (indexing the ParameterList is slow)
        params = [every[i] for i in index]
        with torch.no_grad():
            w = torch.stack(tuple(params)).to(gram)  # (K,)
        norms = torch.diagonal(gram).clamp_min(0.0).sqrt()  # ‖∇_W L_i‖
        weighted = w * norms  # G_W^(i)
        rows = torch.tensor(index, device=self.initial_losses.device)
        initial = self.initial_losses.index_select(0, rows).to(losses)
        initial = torch.where(initial.isnan(), losses, initial)
        self.initial_losses.index_copy_(0, rows, initial.to(self.initial_losses))
        ratios = losses.clamp_min(0.0) / initial.clamp_min(_TINY)  # L̃_i
        rates = ratios / ratios.mean().clamp_min(_TINY)  # r_i
        target = weighted.mean() * rates.pow(self.alpha)
        grads = torch.sign(weighted - target) * norms  # ∂L_grad/∂w_i
        for param, grad in zip(params, grads.to(params[0]).unbind(), strict=True):
            accumulate(param, grad)
        self._pending = index
        return w

    def after_step(self, recompute: Callable[[], Mapping[str, Tensor]]) -> None:
        """Clamp the moved weights positive and renormalise so that ``Σ_i w_i = T``."""
        index, self._pending = self._pending, None
        if index is None:
            return
        with torch.no_grad():
            every = torch.stack(list(self.weights))  # (T,)
            absent = torch.ones_like(every, dtype=torch.bool)
            absent[index] = False
            moved = every[index].clamp_min(_MIN_WEIGHT)
            others = every[absent].sum()  # the absent tasks' weights, unchanged
            total = (len(self.tasks) - others).clamp_min(_MIN_WEIGHT * len(index))
            moved = moved * (total / moved.sum())
            for i, value in zip(index, moved.unbind(), strict=True):
                self.weights[i].copy_(value)
