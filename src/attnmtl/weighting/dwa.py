"""Dynamic weight average (DWA): weights from the rate at which each task's loss falls.

Axes: K tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.registry import register_weighting

# Guards the loss ratio against a zero epoch-average loss (a ratio of 1e12 is still finite).
_TINY = 1e-12


@register_weighting("dwa")
class DynamicWeightAverage(Weighting):
    """Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.

    ``λ_k(t) = K exp(w_k(t-1)/T) / Σ_i exp(w_i(t-1)/T)`` with ``w_k(t-1) = L_k(t-1) / L_k(t-2)``,
    ``L_k`` the epoch-average training loss of task k: a task whose loss fell less over the
    last epoch gets more weight. Only loss values are needed, so it costs nothing beyond EW.
    The weights sum to K over all tasks, are 1 in the first two epochs (no ratio yet) and stay
    constant within an epoch; a batch uses the weights of the tasks present in it.

    The strategy keeps its own epoch averages from the losses it receives, and starts a new
    epoch whenever ``ctx.epoch`` changes (the trainer has no DWA-specific code). A task's
    average is over the batches in which it was present. A task absent for a whole epoch has
    no average for that epoch: its ratio stays the one from its last two epochs with a loss
    (its history simply skips the empty epoch), and a task with fewer than two such epochs
    takes the neutral ratio 1 (its loss did not change), so the others' weights are still
    defined. The accumulators are tensors updated in place (no host sync per step) and are
    buffers, so a checkpoint taken mid-epoch resumes exactly; the current epoch number is
    kept in :meth:`extra_state`.

    Args:
        tasks: names of all tasks, in order.
        temperature: ``T``, the softness of the weights (2 in the paper); a larger ``T`` gives
            weights closer to 1.
    """

    loss_sum: Tensor
    loss_count: Tensor
    last_avg: Tensor
    prev_avg: Tensor
    epochs_seen: Tensor
    lambdas: Tensor

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature={temperature!r}; expected a positive finite number")
        self.temperature = float(temperature)
        k = len(self.tasks)
        self.register_buffer("loss_sum", torch.zeros(k))  # this epoch's sum of batch losses
        self.register_buffer("loss_count", torch.zeros(k))  # batches with the task this epoch
        self.register_buffer("last_avg", torch.zeros(k))  # L_k(t-1)
        self.register_buffer("prev_avg", torch.zeros(k))  # L_k(t-2)
        self.register_buffer("epochs_seen", torch.zeros(k))  # epochs with an average, up to 2
        self.register_buffer("lambdas", torch.ones(k))  # this epoch's weights
        self.epoch: int | None = None  # the epoch the accumulators belong to

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Weight by this epoch's ``λ``, backpropagate, and add the losses to the averages."""
        order = self.present(losses)
        if ctx.epoch != self.epoch:
            self._start_epoch()
            self.epoch = ctx.epoch
        index = torch.tensor([self.index(t) for t in order], device=self.lambdas.device)
        stacked = torch.stack([losses[t] for t in order])  # (K,)
        weights = self.lambdas[index]  # (K,)
        ctx.scale((weights.to(stacked.dtype) * stacked).sum()).backward()
        with torch.no_grad():
            self.loss_sum.index_add_(0, index, stacked.detach().to(self.loss_sum.dtype))
            self.loss_count.index_add_(0, index, torch.ones_like(weights))
        return dict(zip(order, weights.unbind(), strict=True))

    @torch.no_grad()
    def _start_epoch(self) -> None:
        """Close the accumulated epoch into the loss history and set the new epoch's ``λ``."""
        seen = self.loss_count > 0
        average = self.loss_sum / self.loss_count.clamp_min(1)
        self.prev_avg.copy_(torch.where(seen, self.last_avg, self.prev_avg))
        self.last_avg.copy_(torch.where(seen, average, self.last_avg))
        seen_once_more = (self.epochs_seen + 1).clamp_max(2)
        self.epochs_seen.copy_(torch.where(seen, seen_once_more, self.epochs_seen))
        defined = self.epochs_seen >= 2
        ratio = torch.where(
            defined, self.last_avg / self.prev_avg.clamp_min(_TINY), torch.ones_like(average)
        )
        lambdas = len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)
        self.lambdas.copy_(torch.where(defined.any(), lambdas, torch.ones_like(lambdas)))
        self.loss_sum.zero_()
        self.loss_count.zero_()

    def extra_state(self) -> dict[str, object]:
        """The epoch the accumulators belong to (None before the first step)."""
        return {"epoch": self.epoch}

    def load_extra_state(self, state: Mapping[str, object]) -> None:
        """Restore the epoch saved by :meth:`extra_state`."""
        epoch = state.get("epoch")
        if epoch is not None and not isinstance(epoch, int):
            raise ValueError(f"epoch={epoch!r}; expected an int or None")
        self.epoch = epoch
