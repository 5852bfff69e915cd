"""Auto-Lambda: task weights learnt by looking one step ahead on held-out training data.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.gradient import check_positive
from attnmtl.weighting.registry import register_weighting

# Finite-difference radius of the Hessian-vector product, over ‖d‖ (the authors' code: 0.01).
_RADIUS = 0.01


@register_weighting("auto_lambda")
class AutoLambda(Weighting):
    """Liu, Davison & Johns, "Auto-Lambda: Disentangling Dynamic Task Relationships", TMLR 2022.

    The training loss is ``Σ_k λ_k L_k``, and the weights ``λ`` are meta-learnt: they should
    make one training step improve the *primary* tasks' loss on data not used for that step.
    With the virtual step ``θ' = θ − α ∇_θ Σ_k λ_k L_k`` (α the current learning rate),

        ∂L_val(θ')/∂λ_k = −α ∇L_val(θ')ᵀ ∇L_k(θ)
                        ≈ −α (L_k(θ + εd) − L_k(θ − εd)) / 2ε,   d = ∇L_val(θ'),

    the finite-difference Hessian-vector product of DARTS (ε = 0.01/‖d‖), and ``λ`` takes an
    Adam step on it (``meta_lr`` 1e-4, from ``init`` 0.1, as the authors' code). The
    "validation" batch is a held-out batch of training samples (``StepContext.heldout``: the
    Trainer draws one per step, a function of the seed and the step). ``primary`` are the
    tasks whose held-out loss counts (all by default: plain multi-task learning; a subset:
    auxiliary learning, the others helping).

    Two departures from the authors' code, both for this interface: the virtual step is plain
    SGD on the gradient the step just took (their code adds SGD momentum and weight decay of
    their optimizer), and the weights learnt at a step take effect from the next one (the
    step's own backward pass runs first, so the graph is used before the parameters are
    perturbed and then restored bit for bit). The two probes θ ± εd of a pair run with the same
    random state, so dropout masks (and ``ltb``'s Gumbel draws) cancel in their difference.
    Under torchrun the virtual step uses the gradient averaged over the job, and the held-out
    losses are the global batch's. Cost per step: the held-out batch's forward and
    backward passes and two forward passes of the batch, about 2.5–3× equal weighting's step —
    ``update_every`` spreads it. The extra forward passes also update any BatchNorm running
    statistics, as in the original. The weights reported are ``λ``.

    Args:
        tasks: names of all tasks, in order.
        primary: the tasks the held-out loss counts; None: every task.
        init: the starting ``λ_k`` (0.1).
        meta_lr: Adam's learning rate for ``λ`` (1e-4).
        update_every: take the meta step every this many steps (1).
    """

    looks_ahead: ClassVar[bool] = True  # (the weighting benchmark times it among the bilevel)
    modes: ClassVar[tuple[str, ...]] = ("parameters",)
    lambdas: Tensor
    adam_m: Tensor
    adam_v: Tensor
    adam_steps: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        primary: Sequence[str] | None = None,
        init: float = 0.1,
        meta_lr: float = 1e-4,
        update_every: int = 1,
    ) -> None:
        super().__init__(tasks)
        check_positive("init", init)
        check_positive("meta_lr", meta_lr)
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every={update_every!r}; expected an integer >= 1")
        chosen = list(self.tasks if primary is None else primary)
        unknown = [t for t in chosen if t not in self.tasks]
        if unknown or not chosen:
            raise ValueError(f"primary={primary!r}; expected some of the tasks {self.tasks}")
        self.primary, self.meta_lr, self.update_every = chosen, float(meta_lr), update_every
        k = len(self.tasks)
        self.register_buffer("lambdas", torch.full((k,), float(init), dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("adam_steps", torch.zeros(k, dtype=torch.long))
        self.last_meta_gradient: dict[str, float] = {}

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Backpropagate ``Σ λ_k L_k``; then the meta step on ``λ`` (every ``update_every``)."""
        order = self.present(losses)
        idx = [self.index(t) for t in order]
        stacked = torch.stack([losses[t] for t in order])
        lam = self.lambdas[idx].to(stacked.dtype)
        ctx.scale((lam * stacked).sum()).backward()
        weights = dict(zip(order, lam.detach().unbind(), strict=True))
        if ctx.step % self.update_every == 0:
            self.meta_step(ctx, order)
        return weights

    def meta_step(self, ctx: StepContext, order: Sequence[str]) -> None:
        """One Adam step on the present tasks' ``λ`` from the look-ahead's hypergradient."""
        if ctx.heldout is None or ctx.rerun is None or ctx.lr is None:
            raise ValueError(
                f"{type(self).__name__.lower()} looks one step ahead on held-out training "
                "data: it needs StepContext.heldout, rerun and lr, which the Trainer provides"
            )
        params = trainable_parameters(ctx)
        if not params:
            return
        lr = ctx.lr
        device = params[0].device
        factor = float(ctx.scale(torch.ones((), device=device)))
        saved = [p.detach().clone() for p in params]
        rows: list[list[float]] = []
        tasks: list[str] = []
        # both probes of a pair see the same dropout masks and Gumbel draws: their difference
        # is then the parameters', not the noise's (it is divided by 2ε)
        seed = int(torch.randint(2**31 - 1, (1,)))
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.no_grad():  # θ' = θ − α ∇Σλ_k L_k (the gradient just taken)
                for p in params:
                    if p.grad is not None:
                        step = p.grad if ctx.job is None else ctx.job.mean(p.grad.clone())
                        p.sub_(step, alpha=lr / factor)
            objectives = self.objectives(ctx.heldout())
            directions = []  # d_j = ∇L_val_j(θ'), every one before θ moves again
            for j, objective in enumerate(objectives):
                d = torch.autograd.grad(
                    objective, params, allow_unused=True, retain_graph=j < len(objectives) - 1
                )
                if ctx.job is not None:
                    d = tuple(None if g is None else ctx.job.mean(g) for g in d)
                directions.append(d)
            for d in directions:
                norm = math.sqrt(sum(float(g.double().square().sum()) for g in d if g is not None))
                if not math.isfinite(norm) or norm == 0.0:
                    continue
                eps = _RADIUS / norm
                probes = []
                for sign in (1.0, -1.0):  # θ ± εd
                    with torch.no_grad():
                        for p, keep, g in zip(params, saved, d, strict=True):
                            p.copy_(keep)
                            if g is not None:
                                p.add_(g, alpha=sign * eps)
                    with torch.random.fork_rng(devices=devices):
                        torch.manual_seed(seed)
                        probes.append(ctx.rerun())
                plus, minus = probes
                tasks = [t for t in order if t in plus and t in minus]
                rows.append([-lr * (float(plus[t]) - float(minus[t])) / (2 * eps) for t in tasks])
        finally:
            with torch.no_grad():
                for p, keep in zip(params, saved, strict=True):
                    p.copy_(keep)
        if not rows or not tasks:
            return
        width = min(len(r) for r in rows)
        matrix = torch.tensor(
            [r[:width] for r in rows], dtype=torch.float64, device=self.lambdas.device
        )  # (objectives, K): ∂L_val_j/∂λ_k
        if ctx.job is not None:
            matrix = ctx.job.mean(matrix)
        gradient = self.combine_hypergradients(matrix)
        tasks = tasks[:width]
        self.last_meta_gradient = dict(zip(tasks, gradient.tolist(), strict=True))
        where = torch.tensor([self.index(t) for t in tasks], device=self.lambdas.device)
        self.adam(where, gradient)

    def objectives(self, val: Mapping[str, Tensor]) -> list[Tensor]:
        """The held-out objectives ``λ`` serves: the primary tasks' summed loss."""
        primary = [val[t] for t in self.primary if t in val]
        return [torch.stack(primary).sum()] if primary else []

    def combine_hypergradients(self, matrix: Tensor) -> Tensor:
        """The one objective's hypergradient (1, K) → (K,)."""
        return matrix[0]

    def adam(self, idx: Tensor, gradient: Tensor) -> None:
        """Adam on ``λ[idx]`` (:func:`adam_step`)."""
        adam_step(self.lambdas, self, idx, gradient, self.meta_lr)


def trainable_parameters(ctx: StepContext) -> list[nn.Parameter]:
    """Every trainable parameter of the step, shared and task-owned, each once."""
    owned = [p for group in ctx.task_parameters.values() for p in group]
    every = [*ctx.shared_parameters, *owned]
    return list({id(p): p for p in every if p.requires_grad}.values())


def adam_step(values: Tensor, state: nn.Module, idx: Tensor, gradient: Tensor, lr: float) -> None:
    """Adam (β = 0.9, 0.999; ε = 1e-8) on ``values[idx]`` in place, with per-entry step
    counts, from the buffers ``adam_m``, ``adam_v`` and ``adam_steps`` of ``state``."""
    m_all, v_all, steps = state.adam_m, state.adam_v, state.adam_steps
    assert isinstance(m_all, Tensor) and isinstance(v_all, Tensor) and isinstance(steps, Tensor)
    steps[idx] += 1
    t = steps[idx].double()
    m = m_all[idx] * 0.9 + 0.1 * gradient
    v = v_all[idx] * 0.999 + 0.001 * gradient.square()
    m_all[idx], v_all[idx] = m, v
    step = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    values[idx] = values[idx] - lr * step
