"""FORUM: the bilevel task-weighting problem solved with first-order multi-gradients.

Axes: K tasks present in the batch (the lower level's), J tasks present in the held-out batch
(the upper level's objectives), P trainable parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

from attnmtl.weighting.auto_lambda import adam_step, trainable_parameters
from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.gradient import accumulate, check_positive, gram_of, or_zeros, vjp_rows
from attnmtl.weighting.registry import register_weighting

# The inner refit stops early when its loss passes this (a too large inner_lr diverging),
# as the authors' code does.
_DIVERGED = 1e5


def forum_weights(gram: Tensor, rho: float) -> tuple[Tensor, float, Tensor]:
    """Solve FORUM's subproblem (the paper's problem 14) from the Gram matrix of its rows.

    With ``a_j`` the J normalised upper-level gradients and ``q`` the gradient of the
    value-function constraint (the last row; ``gram`` is (J+1, J+1)), find ``λ`` on the simplex
    and ``ν >= 0`` minimising ``‖Σ_j λ_j a_j + ν q‖² − ρ‖q‖² ν`` subject to ``ν >= Σ_j λ_j π_j``,
    ``π_j = ρ − ⟨q, a_j⟩ / ‖q‖²`` (the direction then decreases the constraint at least at
    rate ρ‖q‖²). Solved with SciPy's SLSQP on the exact gradients, warm-started at the
    uniform ``λ`` (the authors solve the same program with cvxpy).

    Returns:
        ``λ`` (J,), ``ν`` and ``π`` (J,), all float64.
    """
    g = gram.detach().double().cpu().numpy()
    j = g.shape[0] - 1
    qq = float(g[j, j]) + 1e-8
    pi = rho - g[:j, j] / qq
    c = rho * qq
    size = float(np.mean(np.diag(g))) or 1.0  # a unit-scale objective for the tolerance

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        gx = g @ x
        return (float(x @ gx) - c * x[j]) / size, (2 * gx - c * np.eye(j + 1)[j]) / size

    ones = np.concatenate([np.ones(j), [0.0]])
    coupling = np.concatenate([-pi, [1.0]])
    start = np.concatenate([np.full(j, 1.0 / j), [max(float(pi.mean()), 0.0)]])
    result = minimize(
        objective,
        start,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, None)] * (j + 1),
        constraints=[
            {"type": "eq", "fun": lambda x: ones @ x - 1.0, "jac": lambda x: ones},
            {"type": "ineq", "fun": lambda x: coupling @ x, "jac": lambda x: coupling},
        ],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    x = np.clip(result.x, 0.0, None)
    lam = torch.from_numpy(x[:j] / x[:j].sum())
    return lam, float(x[j]), torch.from_numpy(pi)


@register_weighting("forum")
class FORUM(Weighting):
    """Ye, Lin, Cao, Zhang & Tsang, "A First-Order Multi-Gradient Algorithm for Multi-Objective
    Bi-Level Optimization", ECAI 2024 (the multi-task form of the authors' code, which LibMTL's
    authors run beside Auto-Lambda and MOML).

    The task weights ``s = softmax(α)`` are the upper level's variables and the model ``ω`` the
    lower level's: ``ω`` should minimise the training loss ``f(α, ω) = Σ_k s_k L_k(ω)``, and
    every task's held-out loss ``F_j(ω)`` is an objective. FORUM replaces the lower level by the
    value-function constraint ``q(α, ω) = f(α, ω) − f(α, ω^T) <= 0``, with ``ω^T`` the model after
    ``inner_steps`` SGD steps on ``f`` from ``ω`` (a copy: ``ω`` is restored bit for bit), and
    takes one first-order step on ``(α, ω)`` that decreases every ``F_j`` and ``q``:

    - ``∇q = (s ⊙ (L(ω) − f(ω)) − s ⊙ (L(ω^T) − f(ω^T)), ∇_ω f(α, ω))`` (``ω^T`` held fixed:
      no second-order term);
    - ``a_j = (0, ∇F_j(ω) / ‖∇F_j(ω)‖)``, on a held-out batch of training samples
      (``StepContext.heldout``);
    - ``λ, ν`` from the quadratic program :func:`forum_weights` on the Gram matrix of
      ``[a_1 … a_J, ∇q]``; ``λ`` is averaged over steps, ``λ̄ ← λ̄ + (λ − λ̄) / (e+1)^{3/4}``
      in epoch e (from 0), and ``ν̄ = max(Σ_j λ̄_j π_j, 0)``;
    - the update ``d = Σ_j λ̄_j a_j + ν̄ ∇q``: its ``ω`` part is written to the parameters'
      gradients (the optimizer steps on it) and its ``α`` part takes an Adam step on ``α``
      (``meta_lr``).

    Defaults are the authors': ``ρ`` 0.1 (their ``FORUM_phi``), 5 inner steps of SGD at 0.1,
    Adam at 1e-3 on ``α`` from 0 (uniform weights). With no held-out objective (the first step
    of a bare :meth:`~attnmtl.weighting.base.Weighting.step`) the update is ``∇_ω f``. Two
    departures from the authors' code: the refit runs on the model itself, so extra forward
    passes update BatchNorm's running statistics (their copy discarded its), and the weights
    are over the tasks present in the batch. Under torchrun every gradient is averaged over the
    job before it is used. Cost per step: ``1 + inner_steps`` backward passes of the batch,
    one J-row vmapped backward pass of the held-out batch and ``inner_steps + 2`` forward
    passes — the benchmark reports it. The weights reported are ``λ̄``.

    Args:
        tasks: names of all tasks, in order.
        rho: the constraint's required decrease rate ρ (0.1).
        inner_steps: SGD steps of the lower-level refit (5).
        inner_lr: their learning rate (0.1).
        meta_lr: Adam's learning rate on ``α`` (1e-3).
    """

    looks_ahead: ClassVar[bool] = True  # (the weighting benchmark times it among the bilevel)
    modes: ClassVar[tuple[str, ...]] = ("parameters",)
    logits: Tensor
    lambdas: Tensor
    adam_m: Tensor
    adam_v: Tensor
    adam_steps: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        rho: float = 0.1,
        inner_steps: int = 5,
        inner_lr: float = 0.1,
        meta_lr: float = 1e-3,
    ) -> None:
        super().__init__(tasks)
        check_positive("rho", rho)
        check_positive("inner_lr", inner_lr)
        check_positive("meta_lr", meta_lr)
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps={inner_steps!r}; expected an integer >= 1")
        self.rho, self.inner_steps = float(rho), inner_steps
        self.inner_lr, self.meta_lr = float(inner_lr), float(meta_lr)
        k = len(self.tasks)
        self.register_buffer("logits", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("lambdas", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("adam_steps", torch.zeros(k, dtype=torch.long))
        self.last_solution: dict[str, float] = {}

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Refit, look at the held-out batch, solve, write ``d``'s ``ω`` part as the gradient
        and step ``α`` on its ``α`` part."""
        if ctx.heldout is None or ctx.part_forward is None or ctx.rerun is None:
            raise ValueError(
                "forum refits a copy of the lower level on the batch and looks at held-out "
                "training data: it needs StepContext.heldout, part_forward and rerun, which "
                "the Trainer provides"
            )
        order = self.present(losses)
        where = torch.tensor([self.index(t) for t in order], device=self.logits.device)
        params = trainable_parameters(ctx)
        if not params:
            return self.reported(order)
        device = params[0].device
        factor = float(ctx.scale(torch.ones((), device=device)))
        s = torch.softmax(self.logits[where], 0)
        values = torch.stack([losses[t] for t in order])
        g_f = self.gradient((s.to(device, values.dtype) * values).sum(), params, ctx, factor)
        low = values.detach().double().to(s.device)
        high = self.refit(ctx, order, s, params, factor)
        q_alpha = s * (low - s @ low) - s * (high - s @ high)  # ∇_α f(ω) − ∇_α f(ω^T)
        if ctx.job is not None:
            q_alpha = ctx.job.mean(q_alpha)
        held = ctx.heldout()
        objectives = [t for t in self.tasks if t in held]
        if not objectives:  # nothing to look at: the lower level's own step
            for p, g in zip(params, g_f, strict=True):
                accumulate(p, g * factor)
            return self.reported(order)
        upper = ctx.scale(torch.stack([held[t] for t in objectives]))  # (J,)
        eye = torch.eye(len(objectives), dtype=upper.dtype, device=upper.device)
        blocks = vjp_rows(upper, params, eye, retain_graph=False)  # one vmapped backward pass
        matrix = torch.cat([b.flatten(1) for b in blocks], 1) / factor  # (J, P)
        if ctx.job is not None:
            matrix = ctx.job.mean(matrix)
        norms = matrix.double().norm(dim=1, keepdim=True) + 1e-8
        rows = [
            *(matrix / norms.to(matrix.dtype)).unbind(0),
            torch.cat([x.reshape(-1) for x in g_f]),
        ]
        gram = gram_of([torch.stack(rows)])
        gram[-1, -1] += q_alpha.square().sum().to(gram.device)  # ∇q's α part (the a_j have none)
        lam, nu, pi = forum_weights(gram, self.rho)
        rate = 1.0 / (ctx.epoch + 1) ** 0.75
        at = torch.tensor([self.index(t) for t in objectives], device=self.lambdas.device)
        self.lambdas[at] += rate * (lam.to(self.lambdas.device) - self.lambdas[at])
        nu_bar = max(float(self.lambdas[at] @ pi.to(self.lambdas.device)), 0.0)
        self.last_solution = {"nu": nu, "nu_bar": nu_bar}
        update = nu_bar * rows[-1]
        for t, row in zip(objectives, rows[:-1], strict=True):
            update = update + float(self.lambdas[self.index(t)]) * row
        start = 0
        for p in params:
            n = p.numel()
            accumulate(p, (update[start : start + n] * factor).view_as(p).to(p.dtype))
            start += n
        adam_step(self.logits, self, where, nu_bar * q_alpha, self.meta_lr)
        return self.reported(order)

    def reported(self, order: Sequence[str]) -> dict[str, Tensor]:
        """task → its ``λ̄``."""
        return {t: self.lambdas[self.index(t)].detach() for t in order}

    def gradient(
        self,
        loss: Tensor,
        params: Sequence[nn.Parameter],
        ctx: StepContext,
        factor: float,
    ) -> list[Tensor]:
        """``∇loss`` over ``params`` (zeros where unused), unscaled, averaged over the job."""
        grads = torch.autograd.grad(ctx.scale(loss), params, allow_unused=True)
        out = [or_zeros(g, p) / factor for g, p in zip(grads, params, strict=True)]
        return out if ctx.job is None else [ctx.job.mean(g) for g in out]

    def refit(
        self,
        ctx: StepContext,
        order: Sequence[str],
        s: Tensor,
        params: Sequence[nn.Parameter],
        factor: float,
    ) -> Tensor:
        """``L(ω^T)`` (K,) after ``inner_steps`` SGD steps on ``f(α, ·)``; ``ω`` restored."""
        assert ctx.part_forward is not None and ctx.rerun is not None
        saved = [p.detach().clone() for p in params]
        try:
            for _ in range(self.inner_steps):
                current = ctx.part_forward(1)[0]
                if not all(t in current for t in order):
                    break
                stacked = torch.stack([current[t] for t in order])
                loss = (s.to(stacked.device, stacked.dtype) * stacked).sum()
                value = float(loss.detach())
                if not math.isfinite(value) or value > _DIVERGED:
                    break
                grads = self.gradient(loss, params, ctx, factor)
                with torch.no_grad():
                    for p, g in zip(params, grads, strict=True):
                        p.sub_(g.to(p.dtype), alpha=self.inner_lr)
            after = ctx.rerun()
            return torch.stack([after[t].detach().double() for t in order]).to(s.device)
        finally:
            with torch.no_grad():
                for p, keep in zip(params, saved, strict=True):
                    p.copy_(keep)
