"""Per-group aggregation: a Gram-matrix method solved per layer (or per parameter tensor)
instead of once over the whole shared vector.

Axes: K tasks present in the batch, L groups of shared parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext
from attnmtl.weighting.cr_mogm import smoothable
from attnmtl.weighting.gradient import (
    Engine,
    GradientBased,
    GradientWeighting,
    Mode,
    accumulate,
    gram_of,
    task_gradients,
)
from attnmtl.weighting.registry import create_weighting, register_weighting

Grouping = Literal["layer", "parameter"]
GROUPINGS: tuple[Grouping, ...] = ("layer", "parameter")
_OWN_OPTIONS = ("mode", "update_every", "engine", "log_losses")


@register_weighting("per_group")
class PerGroup(GradientBased):
    """Any Gram-matrix method applied per group of shared parameters, each group with its own
    state — e.g. GradVac's per-layer form (Wang et al., ICLR 2021, §4.2, whose targets are kept
    per layer), or PCGrad and MGDA per layer as ablated in the literature.

    The per-task gradients are taken once (the batched engine, ``parameters`` mode); for each
    group g the method solves its K×K problem on that group's Gram matrix ``G_g G_gᵀ`` and the
    group's update is ``c_gᵀ G_g``. A method that conflicts on the whole vector may not on a
    layer, and vice versa: conflicts are resolved where they occur. Each group has its own copy
    of the method (its own EMA targets, smoothed weights ...), created at the first step when
    the groups are known, and saved and restored with the strategy.

    ``groups: layer`` takes the model's layers (``StepContext.groups``, from
    :meth:`~attnmtl.models.base.MultiTaskModel.shared_groups`: a weight and its bias form one
    group); ``parameter`` takes every shared tensor alone. Task-specific parameters take their
    own raw gradient. The weight reported per task is its coefficient averaged over the groups,
    each weighted by its number of parameters; :meth:`gradient_stats` reads the whole Gram
    matrix, the sum of the groups'.

    Args:
        tasks: names of all tasks, in order.
        method: a registered Gram-matrix method that combines the raw gradients (``gradvac``,
            ``pcgrad``, ``mgda``, ``cagrad``, ``upgrad``, ...).
        groups: ``layer`` or ``parameter``.
        options: the method's own hyperparameters (``{beta: 0.01}`` for GradVac).
        mode, engine, log_losses: see :class:`~attnmtl.weighting.gradient.GradientBased`
            (``parameters`` mode only).
    """

    modes = ("parameters",)

    def __init__(
        self,
        tasks: Sequence[str],
        method: str = "gradvac",
        groups: Grouping = "layer",
        options: Mapping[str, Any] | None = None,
        mode: Mode = "parameters",
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks, mode=mode, engine=engine, log_losses=log_losses)
        if engine == "gramian":
            raise ValueError(
                "engine='gramian'; per_group applies each layer's own combination, which needs "
                "the layer's gradients: use batched or loop"
            )
        if mode != "parameters":
            raise ValueError(
                f"mode={mode!r}; per_group splits the shared parameters, so it runs in "
                "parameters mode only"
            )
        choices = [m for m in smoothable() if m != "cr_mogm"] + ["cr_mogm"]
        if method not in choices:
            raise ValueError(f"method={method!r}; expected one of: {', '.join(choices)}")
        if groups not in GROUPINGS:
            raise ValueError(f"groups={groups!r}; expected one of: {', '.join(GROUPINGS)}")
        options = dict(options or {})
        clash = [k for k in options if k in _OWN_OPTIONS]
        if clash:
            raise ValueError(
                f"options {clash}: per_group takes the gradients itself, in parameters mode; "
                f"set engine and log_losses on per_group"
            )
        create_weighting(method, self.tasks, **options)  # its options are checked now
        self.method, self.grouping, self.options = method, groups, options
        self.inner = nn.ModuleList()  # one copy of the method per group, from the first step

    def ensure_groups(self, count: int) -> list[GradientWeighting]:
        """The per-group copies of the method, created on first use; ValueError when the
        number of groups changed since the strategy started."""
        if len(self.inner) == 0:
            for _ in range(count):
                self.inner.append(create_weighting(self.method, self.tasks, **self.options))
        if len(self.inner) != count:
            raise ValueError(
                f"per_group: the strategy holds {len(self.inner)} groups but this step's "
                f"shared parameters form {count}; the model changed since it started"
            )
        return [m for m in self.inner if isinstance(m, GradientWeighting)]

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        saved = {
            k[len(prefix) + 6 :].split(".")[0]
            for k in state_dict
            if k.startswith(prefix + "inner.")
        }
        if saved and len(self.inner) == 0:
            self.ensure_groups(len(saved))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def partition(self, ctx: StepContext, count: int) -> list[list[int]]:
        """The groups of this step's shared parameters (positions)."""
        if self.grouping == "parameter":
            return [[i] for i in range(count)]
        if ctx.groups is None:
            raise ValueError(
                "per_group with groups=layer needs the model's layers in StepContext.groups; "
                "build the context with StepContext.from_model(...), or use groups=parameter"
            )
        groups = [list(g) for g in ctx.groups if len(g)]
        if sorted(i for g in groups for i in g) != list(range(count)):
            raise ValueError(f"StepContext.groups does not partition the {count} shared parameters")
        return groups

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Per-task gradients once, then the method per group, and each group's update."""
        order, index, stacked, objective = self.prepare(losses, ctx)
        grads = task_gradients(ctx.scale(objective), order, ctx, "parameters", self.engine)
        if grads.root is not None:  # the encoder takes no gradient: nothing shared to split
            ones = torch.ones(len(order), dtype=stacked.dtype, device=stacked.device)
            grads.apply(ones, weighted=False)
            return self.report(order, ones, stacked)
        groups = self.partition(ctx, len(grads.targets))
        methods = self.ensure_groups(len(groups))
        factor = ctx.scale(torch.ones((), dtype=stacked.dtype, device=stacked.device)).double()
        blocks = grads.blocks
        if ctx.job is not None:
            blocks = [ctx.job.mean(block) for block in blocks]
        whole = torch.zeros(len(order), len(order), dtype=torch.float64, device=stacked.device)
        total = torch.zeros(len(order), dtype=torch.float64, device=stacked.device)
        for members, method in zip(groups, methods, strict=True):
            gram = gram_of([blocks[i] for i in members]) / factor**2
            whole += gram
            method.job = ctx.job
            if bool(torch.isfinite(gram).all()):
                c = method.combine(gram, stacked.detach().double(), index)
            else:  # overflow under AMP: GradScaler skips this step
                c = torch.ones(len(order), dtype=torch.float64, device=stacked.device)
            size = 0
            for i in members:
                block, param = grads.blocks[i], grads.targets[i]
                accumulate(param, (c.to(block.dtype) @ block).view_as(param))
                size += block.shape[1]
            total += c.double() * size
        grads.apply_own(torch.ones(len(order)), weighted=False)
        self.last_gram, self.last_tasks = whole, tuple(order)
        width = sum(grads.blocks[i].shape[1] for g in groups for i in g)
        c = (total / max(width, 1)).to(stacked.dtype)
        self.coefficients[index] = c.detach().to(self.coefficients.dtype)
        return self.report(order, c, stacked)
