"""What every multi-task model built by a config provides.

Axes: B batch, K tasks.

A multi-task model maps a batch's inputs to :class:`~attnmtl.models.output.MultiTaskOutput`
and says which of its parameters are shared by all tasks and which belong to one task;
gradient-based balancing methods differentiate each task's loss with respect to the shared ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from attnmtl.data.batch import Inputs
from attnmtl.models.output import MultiTaskOutput
from attnmtl.tasks import Task


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


class MultiTaskModel(nn.Module):
    """Base class: per-task outputs, shared and task-specific parameters.

    Args:
        tasks: the tasks, in order.

    Subclasses implement :meth:`forward` and :meth:`task_modules`; :meth:`shared_parameters` is
    every trainable parameter that no task owns.
    """

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}
        if not self.tasks:
            raise ValueError("a multi-task model needs at least one task")

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
