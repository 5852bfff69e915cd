"""The task-weighting interface every balancing method implements.

Axes: K tasks present in the batch.

A strategy owns its state (buffers, and parameters for methods that learn weights), receives the
per-task losses of one step and what it needs (:class:`StepContext`), performs the backward pass
itself, and returns the weights it used. The trainer calls the same three methods for every
strategy and never branches on a name (LibMTL's trainer sets attributes on its weighting objects
and switches on method names; that is what this interface replaces).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Batch
from attnmtl.core.distributed import Distributed
from attnmtl.core.losses import part_batches, part_losses, task_losses
from attnmtl.core.output import MultiTaskOutput
from attnmtl.models.base import FeatureSplit, MultiTaskModel

Needs = Literal["losses", "parameters", "features"]


# Log-loss methods floor each loss here: a zero loss would make the log (and its gradient)
# infinite. attnmtl's task losses are >= 0.
LOSS_FLOOR = 1e-12


@dataclass(frozen=True)
class GradientStats:
    """The task gradients of one step, seen through their Gram matrix ``GGᵀ``.

    Attributes:
        tasks: the tasks present, in order.
        norms: ``‖g_k‖`` (K,).
        cosines: ``cos(g_i, g_j)`` (K, K); NaN where a gradient is zero. A negative entry is a
            conflict: a step along one task's gradient increases the other's loss.
    """

    tasks: tuple[str, ...]
    norms: Tensor
    cosines: Tensor

    @classmethod
    def from_gram(cls, gram: Tensor, tasks: Sequence[str]) -> GradientStats:
        """From ``GGᵀ`` (K, K) of the gradients of ``tasks``, or an estimate of it that need
        not be positive semi-definite (SDMGrad's cross-Gram): its cosines are clipped to
        [-1, 1]; a norm estimated below 0 reads 0, and its cosines NaN."""
        norms = gram.diagonal().clamp_min(0).sqrt()
        outer = norms[:, None] * norms[None, :]
        cosines = torch.where(outer > 0, (gram / outer).clamp(-1.0, 1.0), torch.nan)
        return cls(tuple(tasks), norms.detach().cpu(), cosines.detach().cpu())

    def as_log(self) -> dict[str, dict[str, float]]:
        """``{"norm": {task: ‖g‖}, "cos": {"a|b": cos}}`` (each pair once) for metrics.jsonl."""
        norm = {t: float(n) for t, n in zip(self.tasks, self.norms.tolist(), strict=True)}
        cos = {
            f"{a}|{b}": float(self.cosines[i, j])
            for i, a in enumerate(self.tasks)
            for j, b in enumerate(self.tasks)
            if i < j
        }
        return {"norm": norm, "cos": cos}


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
        groups: the shared parameters grouped by layer (positions in ``shared_parameters``;
            :meth:`~attnmtl.models.base.MultiTaskModel.shared_groups`), for strategies that
            solve per layer (``per_group``); None when not known.
        parts: ``parts(n)`` gives the task losses of n disjoint parts of this batch from the
            same forward pass (:func:`~attnmtl.core.losses.part_losses`), for strategies that
            need independent estimates (MoDo, SDMGrad); None when the batch is not at hand.
        part_forward: as ``parts``, but from a forward pass per part (graphs of their own), so
            each part's gradients cost a backward pass over its own samples only; None when the
            model or the batch is not at hand.
        rerun: ``rerun()`` gives this batch's task losses under the model's parameters as they
            are when it is called, without gradient (bilevel methods perturb the parameters
            and look); None when the batch is not at hand.
        heldout: ``heldout()`` gives the task losses, with gradient, of a held-out batch of
            training samples under the parameters as they are (Auto-Lambda's "validation"
            batch drawn from the training data); None where there is no data set.
        lr: the optimizer's current learning rate (the step size of a virtual update).
        model: the model whose forward passes ``part_forward`` runs, for strategies that
            record its shared layers there (SDMGrad's cross-Gram by layer); None when unknown.
    """

    shared_parameters: Sequence[nn.Parameter]
    features: Tensor | None
    step: int
    epoch: int
    scale: Callable[[Tensor], Tensor] = identity
    task_parameters: Mapping[str, Sequence[nn.Parameter]] = field(default_factory=dict)
    split: FeatureSplit | None = None
    job: Distributed | None = None
    groups: Sequence[Sequence[int]] | None = None
    parts: Callable[[int], list[dict[str, Tensor]]] | None = None
    part_forward: Callable[[int], list[dict[str, Tensor]]] | None = None
    rerun: Callable[[], dict[str, Tensor]] | None = None
    heldout: Callable[[], dict[str, Tensor]] | None = None
    lr: float | None = None
    model: nn.Module | None = None

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
        batch: Batch | None = None,
    ) -> StepContext:
        """The context of one step of ``model``, with nothing left out: its shared parameters
        (and their layers), every task's own parameters, ``output``'s shared representation
        and, given the ``batch``, the losses of its parts."""
        return cls(
            model.shared_parameters(),
            output.features,
            step,
            epoch,
            scale,
            {t: model.task_parameters(t) for t in model.tasks},
            split,
            job,
            model.shared_groups(),
            None if batch is None else (lambda n: part_losses(output, batch, model.tasks, n)),
            model=model,
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
    # Whether :meth:`after_step` calls its ``recompute`` (a forward pass after the update).
    needs_recompute: ClassVar[bool] = False
    # The batch of the previous :meth:`step`: the held-out batch bilevel strategies look at in
    # your own loop (the Trainer draws its own).
    previous_batch: Batch | None = None

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks={list(tasks)!r}; expected distinct task names")
        self.tasks = list(tasks)

    def index(self, task: str) -> int:
        """Position of ``task`` in :attr:`tasks`."""
        return self.tasks.index(task)

    def present(self, losses: Mapping[str, Tensor]) -> list[str]:
        """The tasks of ``losses`` in :attr:`tasks` order; ValueError when there are none
        (or one is not a task of this strategy)."""
        order = sorted(losses, key=self.index)
        if not order:
            raise ValueError("losses is empty; expected the loss of at least one task")
        return order

    @abstractmethod
    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Combine ``losses`` (task → scalar, tasks present this step), run the backward pass.

        Returns:
            task → the weight (a detached scalar tensor) the strategy applied to that task's
            loss this step (for gradient-based methods, the equivalent weight they report).
        """

    def step(
        self,
        losses: Mapping[str, Tensor],
        model: MultiTaskModel,
        output: MultiTaskOutput,
        optimizer: torch.optim.Optimizer,
        *,
        step: int,
        epoch: int = 0,
        batch: Batch | None = None,
        max_grad_norm: float | None = None,
    ) -> dict[str, Tensor]:
        """One whole optimizer step, with nothing left to forget: zero the gradients, run
        :meth:`backward` with the context derived from ``model``
        (:meth:`StepContext.from_model`), clip (``max_grad_norm``), ``optimizer.step()``, then
        :meth:`after_step`.

        Args:
            losses: task → its loss this step (:func:`attnmtl.core.task_losses`).
            model: the multi-task model ``output`` came from.
            output: this batch's forward pass.
            optimizer: holds the model's parameters and this strategy's (``parameters()``:
                uncertainty's log-variances, GradNorm's weights); a strategy whose parameters
                it lacks raises instead of never learning them.
            step: optimizer steps taken before this one, across epochs.
            epoch: the current epoch (DWA starts a new one when it changes).
            batch: this step's batch; strategies that update themselves from the batch's
                losses under the updated model (FAMO) need it, and raise without it. The
                previous step's batch is Auto-Lambda's held-out batch here.
            max_grad_norm: clip the model's gradients to this norm before the update.

        Returns:
            task → the weight the strategy applied.
        """
        if self.needs_recompute and batch is None:
            raise ValueError(
                f"{type(self).__name__} updates itself from the batch's losses after the "
                "optimizer step: pass batch=batch"
            )
        self._check_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)

        def recompute() -> dict[str, Tensor]:
            assert batch is not None
            with torch.no_grad():
                again = model(batch.inputs, batch.lengths)
                return task_losses(again, batch, model.tasks)

        previous = self.previous_batch

        def heldout() -> dict[str, Tensor]:
            if previous is None:  # the first step has no other batch to look at
                return {}
            again = model(previous.inputs, previous.lengths)
            return task_losses(again, previous, model.tasks)

        ctx = StepContext.from_model(model, output, step, epoch, batch=batch)
        ctx.rerun = recompute if batch is not None else None
        if batch is not None:
            ctx.part_forward = lambda n: [
                task_losses(model(b.inputs, b.lengths), b, model.tasks)
                for b in part_batches(batch, n)
            ]
        ctx.heldout = heldout if batch is not None else None
        ctx.lr = float(optimizer.param_groups[0]["lr"])
        if getattr(self, "looks_ahead", False):  # (only bilevel strategies read it)
            self.previous_batch = batch
        weights = self.backward(losses, ctx)
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        self.after_step(recompute)
        return weights

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """ValueError when ``optimizer`` does not hold every parameter of this strategy."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, p in self.named_parameters() if p.requires_grad and id(p) not in held]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: the optimizer does not hold the strategy's parameters "
                f"{missing}, so they would never learn; build it over "
                "[*model.parameters(), *weighting.parameters()]"
            )

    def capture(self, model: nn.Module) -> AbstractContextManager[object]:
        """A context the forward pass runs in, for strategies that record something of it
        (the ``gramian`` engine: each shared Linear layer's input and output); a no-op by
        default. The trainer enters it around every training forward pass."""
        return contextlib.nullcontext()

    def gradient_stats(self) -> GradientStats | None:
        """The per-task gradients' norms and pairwise cosines at the last step, where the
        strategy computed them anyway (gradient-based methods: from their Gram matrix, at no
        extra cost); None for strategies that never form per-task gradients."""
        return None

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
