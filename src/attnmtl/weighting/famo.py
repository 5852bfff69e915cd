"""Fast adaptive multitask optimization (FAMO): balanced loss decrease in O(1) space and time.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.registry import register_weighting


@register_weighting("famo")
class FAMO(Weighting):
    """Liu, Liu, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023.

    FAMO seeks the update that decreases every task's log loss at the same rate, without the
    K backward passes of gradient-manipulation methods. Task logits ``ξ`` give ``z = softmax(ξ)``
    and, with ``D_k = L_k - L_k* + ε`` (``L_k*`` = ``min_losses``, 0 by default), the combined
    loss is ``Σ_k z_k log D_k / c`` with ``c = Σ_k z_k / D_k`` held constant. Its gradient is
    ``Σ_k (z_k / (c D_k)) ∇L_k``: a convex combination of the task gradients (the weights
    reported sum to 1), in the direction ``Σ_k z_k ∇log L_k``.

    After the model's optimizer step, :meth:`after_step` evaluates the same batch again and
    moves ``ξ`` along the gradient of ``Σ_k z_k (log D_k(t) - log D_k(t+1))``, i.e.
    ``z ⊙ (δ - zᵀδ)`` for the log-loss decreases ``δ``: a task whose loss fell fastest loses
    weight. The step is Adam with L2 weight decay ``γ`` on ``ξ`` (the paper's regulariser), as
    the official code does with ``torch.optim.Adam``; we run it ourselves, per task, so that a
    task absent from a step keeps its logit, its moments and its step count untouched (Adam is
    elementwise, so each task's logit follows exactly the Adam trajectory of the steps it took
    part in; with every task always present this is ``torch.optim.Adam``). An absent task is
    also left out of the softmax and of the combination for that step.

    ``ξ`` and the Adam state are buffers (saved in ``state_dict()``); the log losses kept
    between :meth:`backward` and :meth:`after_step` are not, as checkpoints are written between
    steps. The official training scripts also clip the shared gradients to norm 1; here that is
    the trainer's ``grad_clip``.

    Args:
        tasks: names of all tasks, in order.
        lr: learning rate of the logits' Adam step (0.025 in the official code).
        weight_decay: ``γ``, L2 decay of the logits (the official scripts use 1e-3 for QM9 and
            1e-2 for CelebA).
        betas: Adam's moment decay rates.
        adam_eps: Adam's denominator epsilon.
        eps: ``ε`` added to every ``L_k - L_k*`` so the log is defined (1e-8 officially).
        min_losses: ``L_k*`` per task, a lower bound of each loss; zeros by default. Every loss
            must stay above its bound.
    """

    needs_recompute = True
    logits: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    adam_steps: Tensor
    min_losses: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        eps: float = 1e-8,
        min_losses: Sequence[float] | None = None,
    ) -> None:
        super().__init__(tasks)
        k = len(self.tasks)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr={lr!r}; expected a positive finite number")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay={weight_decay!r}; expected a finite number >= 0")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas={tuple(betas)!r}; expected two numbers in [0, 1)")
        for name, value in (("adam_eps", adam_eps), ("eps", eps)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r}; expected a positive finite number")
        bounds = [0.0] * k if min_losses is None else [float(v) for v in min_losses]
        if len(bounds) != k or not all(math.isfinite(v) for v in bounds):
            raise ValueError(
                f"min_losses={min_losses!r}; expected {k} finite numbers, one per task"
            )
        self.lr, self.weight_decay, self.eps, self.adam_eps = lr, weight_decay, eps, adam_eps
        self.betas = (float(betas[0]), float(betas[1]))
        self.register_buffer("logits", torch.zeros(k))  # ξ
        self.register_buffer("exp_avg", torch.zeros(k))  # Adam's first moment of ξ's gradient
        self.register_buffer("exp_avg_sq", torch.zeros(k))  # and its second moment
        self.register_buffer("adam_steps", torch.zeros(k, dtype=torch.long))  # per task
        self.register_buffer("min_losses", torch.tensor(bounds), persistent=False)
        self._pending: tuple[list[str], Tensor, Tensor] | None = None  # order, index, log D(t)

    def _gap(self, stacked: Tensor, index: Tensor) -> Tensor:
        """``D = L - L* + ε`` of the stacked losses of the tasks at ``index`` (K,)."""
        return stacked - self.min_losses[index].to(stacked.dtype) + self.eps

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Combine as ``Σ z_k log D_k / c``, backpropagate; report ``z_k / (c D_k)``."""
        if self._pending is not None:
            raise self.missed_after_step()
        order = self.present(losses)
        index = torch.tensor([self.index(t) for t in order], device=self.logits.device)
        stacked = torch.stack([losses[t] for t in order])  # (K,)
        gap = self._gap(stacked, index)  # (K,)
        z = torch.softmax(self.logits[index], dim=0).to(stacked.dtype)  # (K,)
        c = (z / gap.detach()).sum()
        ctx.scale((z / c * gap.log()).sum()).backward()
        self._pending = (order, index, gap.detach().log())
        weights = z / (c * gap.detach())  # (K,)
        return dict(zip(order, weights.unbind(), strict=True))

    def after_step(self, recompute: Callable[[], Mapping[str, Tensor]]) -> None:
        """Update ``ξ`` from the decrease of the log losses on the same batch."""
        if self._pending is None:
            return
        order, index, before = self._pending
        self._pending = None
        with torch.no_grad():
            new = recompute()
            keep = [i for i, t in enumerate(order) if t in new]
            if not keep:
                return
            if len(keep) < len(order):  # a task the recomputation lost takes no part
                rows = torch.tensor(keep, device=index.device)
                index, before, order = index[rows], before[rows], [order[i] for i in keep]
            after = self._gap(torch.stack([new[t] for t in order]), index).log()  # (K,)
            delta = (before - after).to(self.logits.dtype)  # (K,)
            z = torch.softmax(self.logits[index], dim=0)  # (K,)
            self._adam_step(index, z * (delta - (z * delta).sum()))

    def _adam_step(self, index: Tensor, grad: Tensor) -> None:
        """One Adam step (L2 weight decay, as ``torch.optim.Adam``) on the logits at ``index``."""
        beta1, beta2 = self.betas
        logits = self.logits[index]
        grad = grad + self.weight_decay * logits
        exp_avg = self.exp_avg[index].lerp_(grad, 1 - beta1)
        exp_avg_sq = self.exp_avg_sq[index].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        steps = self.adam_steps[index] + 1
        correction1 = 1 - torch.pow(beta1, steps.double())  # (K,)
        correction2 = 1 - torch.pow(beta2, steps.double())
        denom = exp_avg_sq.sqrt() / correction2.sqrt().to(logits.dtype) + self.adam_eps
        step_size = (self.lr / correction1).to(logits.dtype)
        self.logits.index_copy_(0, index, logits - step_size * exp_avg / denom)
        self.exp_avg.index_copy_(0, index, exp_avg)
        self.exp_avg_sq.index_copy_(0, index, exp_avg_sq)
        self.adam_steps.index_copy_(0, index, steps)
