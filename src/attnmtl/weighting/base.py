"""The task-weighting interface every balancing method implements.

Axes: K tasks present in the batch.

A strategy owns its state (buffers, and parameters for methods that learn weights), receives the
per-task losses of one step and what it needs (:class:`StepContext`), performs the backward pass
itself, and returns the weights it used. The trainer calls the same three methods for every
strategy and never branches on a name (LibMTL's trainer sets attributes on its weighting objects
and switches on method names; that is what this interface replaces).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor, nn

from attnmtl.core.distributed import Distributed
from attnmtl.core.output import MultiTaskOutput
from attnmtl.models.base import FeatureSplit, MultiTaskModel

Needs = Literal["losses", "parameters", "features"]


def identity(loss: Tensor) -> Tensor:
    """The loss unchanged (no gradient scaling)."""
    return loss


@dataclass
class StepContext:
    """What a strategy may use in one step besides the losses.

    Attributes:
        shared_parameters: the model's shared parameters (gradient-based methods take per-task
            gradients of these).
        features: the shared representation of this batch, in the graph (the ``features``
            gradient mode differentiates the losses with respect to it), or None.
        step: optimizer steps taken before this one (0-based, across epochs).
        epoch: the current epoch (0-based).
        scale: applied to the combined loss before ``backward`` (AMP's ``GradScaler.scale``);
            identity otherwise.
        task_parameters: task → the parameters that task alone owns (its attention, head, ...).
        split: the forward pass's per-task cut of the shared representation, when the trainer
            ran it inside :meth:`~attnmtl.models.base.MultiTaskModel.split_features` (only for
            strategies whose ``needs`` is not ``losses``); ``features`` is then its root.
        job: the torchrun job (:class:`~attnmtl.core.distributed.Distributed`) whose processes
            share the step, or None in one process: gradient methods reduce their Gram matrix
            over it and random draws are agreed on it.
    """

    shared_parameters: Sequence[nn.Parameter]
    features: Tensor | None
    step: int
    epoch: int
    scale: Callable[[Tensor], Tensor] = identity
    task_parameters: Mapping[str, Sequence[nn.Parameter]] = field(default_factory=dict)
    split: FeatureSplit | None = None
    job: Distributed | None = None

    @classmethod
    def from_model(
        cls,
        model: MultiTaskModel,
        output: MultiTaskOutput,
        step: int,
        epoch: int,
        scale: Callable[[Tensor], Tensor] = identity,
        split: FeatureSplit | None = None,
        job: Distributed | None = None,
    ) -> StepContext:
        """The context of one step of ``model``, with nothing left out: its shared parameters,
        every task's own parameters and ``output``'s shared representation."""
        return cls(
            model.shared_parameters(),
            output.features,
            step,
            epoch,
            scale,
            {t: model.task_parameters(t) for t in model.tasks},
            split,
            job,
        )


class Weighting(nn.Module, ABC):
    """Base class of task-balancing strategies.

    Args:
        tasks: names of all tasks, in order. A batch may carry losses for a subset of them
            (samples labelled for some tasks only); a strategy weights the tasks present and
            leaves the others' state untouched for that step.

    Subclasses set ``needs`` to say what the trainer must provide in :class:`StepContext`
    (``losses`` only, ``parameters`` or ``features``), implement :meth:`backward`, and may
    override :meth:`after_step`. Learnable weights are ``nn.Parameter`` s of the strategy; the
    trainer adds :meth:`parameters` to its optimizer (without weight decay), and saves
    ``state_dict()`` plus :meth:`extra_state` in checkpoints.
    """

    needs: Needs = "losses"

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks={list(tasks)!r}; expected distinct task names")
        self.tasks = list(tasks)

    def index(self, task: str) -> int:
        """Position of ``task`` in :attr:`tasks`."""
        return self.tasks.index(task)

    @abstractmethod
    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Combine ``losses`` (task → scalar, tasks present this step), run the backward pass.

        Returns:
            task → the weight (a detached scalar tensor) the strategy applied to that task's
            loss this step (for gradient-based methods, the equivalent weight they report).
        """

    def wants_split(self) -> bool:
        """Whether the forward pass should cut the shared representation per task
        (:class:`~attnmtl.models.base.FeatureSplit`); only gradient-based strategies do."""
        return False

    def after_step(self, recompute: Callable[[], Mapping[str, Tensor]]) -> None:
        """Hook run after the optimizer step; call it after every ``optimizer.step()``.

        ``recompute()`` returns the per-task losses of the same batch under the updated model
        (no gradient); it costs a forward pass, so only strategies that need it (FAMO) call it.
        Strategies that rely on this hook (FAMO, GradNorm) raise at their next
        :meth:`backward` when it was not called (:meth:`missed_after_step`).
        """

    def missed_after_step(self) -> RuntimeError:
        """The error a strategy raises when :meth:`after_step` did not follow its last step."""
        return RuntimeError(
            f"{type(self).__name__}: after_step() was not called after the previous "
            "optimizer step, so the strategy's own update was lost; call "
            "weighting.after_step(recompute) after every optimizer.step() (recompute: a "
            "function returning the batch's task losses under the updated model)"
        )

    def extra_state(self) -> dict[str, object]:
        """JSON-serialisable state outside ``state_dict()`` (e.g. loss histories)."""
        return {}

    def load_extra_state(self, state: Mapping[str, object]) -> None:
        """Restore what :meth:`extra_state` returned."""
