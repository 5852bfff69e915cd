"""What every multi-task model built by a config provides.

Axes: B batch, K tasks.

A multi-task model maps a batch's inputs to :class:`~attnmtl.core.output.MultiTaskOutput`
and says which of its parameters are shared by all tasks and which belong to one task;
gradient-based balancing methods differentiate each task's loss with respect to the shared ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.registry import splitting_models


def unique_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """Trainable parameters of ``modules``, each once, in a stable order."""
    seen: set[int] = set()
    params = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def make_head(
    in_dim: int, out_dim: int, hidden_dim: int | None = None, dropout: float = 0.0
) -> nn.Module:
    """A task head: Linear, or Linear-ReLU-Dropout-Linear with ``hidden_dim``."""
    if hidden_dim is None:
        return nn.Linear(in_dim, out_dim)
    if hidden_dim < 1:
        raise ValueError(f"head hidden_dim={hidden_dim!r}; expected >= 1 or None")
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, out_dim),
    )


@dataclass
class FeatureSplit:
    """The shared representation of one forward pass, cut per task.

    Inside :meth:`MultiTaskModel.split_features`, a model that supports it feeds each task its
    own leaf copy of the shared representation (detached from the encoder's graph, sharing its
    memory). One backward pass of the summed task losses then leaves every task's gradient at
    the representation in its own leaf, and stops there; the caller finishes the backward pass
    into the encoder with ``root.backward(cotangent)``. Gradient-based weighting uses this to
    get all per-task gradients at the representation from one backward pass through the task
    branches (what LibMTL's ``rep_grad`` mode does with one backward pass per task).

    Attributes:
        root: the shared representation, in the encoder's graph (None until the forward pass).
        leaves: task → the leaf that task's branch read.
    """

    root: Tensor | None = None
    leaves: dict[str, Tensor] = field(default_factory=dict)

    def carry_to_root(self) -> None:
        """Backpropagate what a backward pass left on the leaves on into the encoder (keeping
        the graph) and clear them: how a term that is not a task loss, such as a transfer
        term, reaches the shared parameters through the cut."""
        if self.root is None:
            return
        pending = [leaf.grad for leaf in self.leaves.values() if leaf.grad is not None]
        for leaf in self.leaves.values():
            leaf.grad = None
        if pending:
            self.root.backward(torch.stack(pending).sum(0), retain_graph=True)


class MultiTaskModel(nn.Module):
    """Base class: per-task outputs, shared and task-specific parameters.

    Args:
        tasks: the tasks, in order.

    Subclasses implement :meth:`forward` and :meth:`task_modules`; :meth:`shared_parameters` is
    every trainable parameter that no task owns. A model with one shared representation that
    every task reads passes it through :meth:`branch` and sets ``splits_features = True``; that
    enables the ``features`` gradient mode of gradient-based weighting (see
    :class:`FeatureSplit`). Every shared parameter of such a model must lie before the split.
    """

    splits_features: ClassVar[bool] = False
    # True when ``output.attention[task]`` is the task's gate over experts (B, E) rather than
    # weights over the input's steps (the report draws either without knowing the class).
    gated: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}
        if not self.tasks:
            raise ValueError("a multi-task model needs at least one task")
        self._split: FeatureSplit | None = None

    def branch(self, features: Tensor) -> dict[str, Tensor]:
        """Task → the shared representation that task reads: ``features`` itself, or, inside
        :meth:`split_features`, a separate leaf per task."""
        split = self._split
        if split is None:
            return dict.fromkeys(self.tasks, features)
        split.root = features
        split.leaves = {
            t: features.detach().requires_grad_(features.requires_grad) for t in self.tasks
        }
        return dict(split.leaves)

    @contextmanager
    def split_features(self) -> Iterator[FeatureSplit]:
        """Forward passes inside this block cut the shared representation per task."""
        if not self.splits_features:
            raise ValueError(
                f"model {type(self).__name__} has no single shared representation to split; "
                f"use a model that has one ({', '.join(splitting_models())}) or the parameters "
                "mode"
            )
        split, previous = FeatureSplit(), self._split
        self._split = split
        try:
            yield split
        finally:
            self._split = previous

    @contextmanager
    def split_each_forward(self) -> Iterator[list[FeatureSplit]]:
        """As :meth:`split_features`, but every forward pass inside the block gets a split of
        its own, appended in call order to the list yielded (the parts' forward passes of the
        double-sampling weightings)."""
        with self.split_features():
            splits: list[FeatureSplit] = []

            def fresh(module: nn.Module, args: Any) -> None:
                self._split = FeatureSplit()
                splits.append(self._split)

            handle = self.register_forward_pre_hook(fresh)
            try:
                yield splits
            finally:
                handle.remove()

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions for every sample of the batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def task_modules(self, task: str) -> list[nn.Module]:
        """The modules that belong to ``task`` alone (its attention, its head, ...)."""
        raise NotImplementedError(f"{type(self).__name__} must implement task_modules")

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Trainable parameters of ``task`` alone."""
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; expected one of: {', '.join(self.tasks)}")
        return unique_parameters(self.task_modules(task))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that no single task owns (the shared encoder, ...)."""
        owned = {id(p) for t in self.tasks for p in self.task_parameters(t)}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in owned]

    def shared_groups(self) -> list[list[int]]:
        """The shared parameters (positions in :meth:`shared_parameters`) grouped by the module
        that holds them: one group per layer (a weight and its bias together), in order."""
        where = {id(p): i for i, p in enumerate(self.shared_parameters())}
        groups: dict[str, list[int]] = {}
        for name, param in self.named_parameters():
            if id(param) in where:
                groups.setdefault(name.rpartition(".")[0], []).append(where[id(param)])
        return list(groups.values())
