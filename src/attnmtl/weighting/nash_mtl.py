"""Nash-MTL: the update is the Nash bargaining solution among the tasks.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode, check_positive, warn_once
from attnmtl.weighting.registry import register_weighting

# Newton decrement² below which the full Newton step is taken: λ < 1/4 lies in the region of
# quadratic convergence of a self-concordant function, and a step with λ < 1 stays in α > 0.
_FULL_STEP = 0.0625
# Stop after a full step whose decrement² is below this: the next decrement is then ≲ 1e-10
# (quadratic convergence), i.e. α ⊙ Mα = 1 to about 1e-10.
_TOL = 1e-10
# β_i = α_i ‖g_i‖ = 1 / (√K cos θ_i), θ_i the angle between g_i and the update: beyond this the
# task is served at cos θ_i < 1e-8 / √K, below float32 gradients' precision, and the iterates
# are taken as diverging (no solution: f is unbounded below).
_DIVERGED = 1e8
# Guards the division by 1ᵀC1 (zero when the normalised gradients sum to zero).
_TINY = 1e-300
# An answer is returned only if it solves the bargaining equations to this tolerance:
# α > 0 and max_i |α_i (Mα)_i − 1| <= _RESIDUAL (each task's directional derivative within
# 1e-6 of the bargaining condition g_iᵀd = 1/α_i). Newton stops at λ² < 1e-10, where the
# residual is ~1e-10 on a well-posed problem; anything larger is not a solution.
_RESIDUAL = 1e-6
# clip_grad_norm_'s epsilon, as in the official code's clipping.
_CLIP_EPS = 1e-6


def nash_bargaining(gram: Tensor, max_iter: int = 20) -> Tensor | None:
    """``α > 0`` with ``Mα = 1/α`` (elementwise) for ``M = gram``, or None where there is none.

    ``Mα = 1/α`` is the stationarity condition of the strictly convex problem
    ``min_{α>0} f(α) = ½ αᵀMα − Σ_i log α_i`` (``∇f = Mα − 1/α``, ``∇²f = M + diag(1/α²) ≻ 0``),
    so the solution is unique when it exists; it exists unless some ``v ≥ 0, v ≠ 0`` has
    ``Mv = 0`` (a zero gradient, or gradients with a vanishing non-negative combination): ``f``
    then decreases without bound along ``v``.

    The equation is invariant under a diagonal change of scale: with ``D = diag(√M_ii)`` and
    ``C = D⁻¹MD⁻¹`` (unit diagonal), ``Mα = 1/α`` iff ``Cβ = 1/β`` for ``β = Dα``. We solve for
    ``β`` (so the result does not depend on the gradients' scales, and orthogonal gradients give
    ``β = 1`` at once) by Newton's method on ``½ βᵀCβ − Σ log β_i`` (``f`` up to a constant):
    from ``β₀ = √(K / 1ᵀC1) 1`` (the best multiple of 1), each step solves
    ``(C + diag(1/β²)) Δ = Cβ − 1/β``; with Newton decrement ``λ² = (Cβ − 1/β)ᵀΔ`` below 1/16
    the full step ``β − Δ`` is taken (quadratic convergence; it keeps ``β > 0`` since
    ``‖Δ/β‖ ≤ λ < 1``), otherwise an exact line search along ``−Δ`` (1-D Newton on the host,
    inside the region ``β − tΔ > 0``). It stops after a full step with ``λ² < 1e-10``: 3-6
    solves of size K, one host sync each.

    A zero gradient, and unit gradients that sum to zero (``1ᵀC1 = 0``, so ``C1 = 0``: a
    Pareto-stationary point of equal-norm gradients), are caught before the first step.
    Other problems without a solution show up as iterates that diverge: we give up when some
    ``β_i = 1 / (√K cos θ_i)`` exceeds 1e8 (``θ_i`` the angle between ``g_i`` and the update;
    the task would be served at a cosine below float32's precision) or after ``max_iter``
    steps. Newton's decrement ``λ² = gᵀH⁻¹g`` is never negative for the positive-definite
    ``H``; a negative or non-finite one means the arithmetic has broken down (a
    near-stationary input), and is no solution either. Finally nothing is returned that does
    not solve the equations: ``β > 0`` and ``max_i |β_i (Cβ)_i − 1| <= 1e-6`` (the same as
    ``|α_i (Mα)_i − 1|``) are checked, in float64, before returning.

    Returns:
        ``α`` (K,), or None when there is no solution (a zero gradient, a stationary point,
        diverging iterates, no convergence in ``max_iter`` steps, or an answer that fails the
        check above).
    """
    k = gram.shape[0]
    diagonal = torch.diagonal(gram)
    if not float(diagonal.min()) > 0.0:  # a zero gradient (the common case of no solution)
        return None
    scale = diagonal.sqrt()  # (K,) the gradients' norms
    c = gram / torch.outer(scale, scale)  # (K, K)
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    ones = torch.ones(k, dtype=gram.dtype, device=gram.device)
    total = c.sum()  # 1ᵀC1 = ‖Σ_i g_i/‖g_i‖‖² >= 0
    if not float(total) > 0.0:  # the unit gradients sum to zero: no solution
        return None
    beta = ones * (k / total.clamp_min(_TINY)).sqrt()
    for _ in range(max_iter):
        c_beta = c @ beta
        grad = torch.addcdiv(c_beta, ones, beta, value=-1.0)  # Cβ − 1/β
        hessian = torch.addcdiv(c, eye, beta.square())  # C + diag(1/β²)
        step = torch.linalg.solve_ex(hessian, grad)[0]
        decrement = float(grad @ step)  # λ², the one host sync of an iteration
        if not math.isfinite(decrement) or decrement < -_TOL:  # H is not positive definite
            return None
        if decrement < _FULL_STEP:
            beta = beta - step
            if decrement < _TOL:
                return beta / scale if _solves(c, beta) else None
        else:
            # along p = −Δ, with q = p/β: f(β + tp) − f(β) = φ(t) =
            # t pᵀCβ + t² pᵀCp / 2 − Σ log(1 + t q_i)
            c_step = c @ step
            host = torch.stack([step @ c_step, -(step @ c_beta), beta.max()])
            curvature, slope, largest, *ratios = torch.cat([host, -step / beta]).tolist()
            if largest > _DIVERGED:
                return None
            t = _line_search(curvature, slope, ratios, decrement)
            beta = beta.add(step, alpha=-t)
    return None


def _solves(c: Tensor, beta: Tensor) -> bool:
    """Whether ``β > 0`` solves ``Cβ = 1/β`` to :data:`_RESIDUAL` (checked in float64)."""
    c, beta = c.double(), beta.double()
    residual = (beta * (c @ beta) - 1.0).abs().max()
    return bool((beta > 0).all()) and float(residual) <= _RESIDUAL


def _line_search(curvature: float, slope: float, ratios: list[float], decrement: float) -> float:
    """The minimiser ``t > 0`` of ``φ(t) = t·slope + t²·curvature/2 − Σ log(1 + t·q_i)``.

    ``φ`` is convex on its domain ``1 + t q_i > 0``, with ``φ'(0) = −λ²`` (``decrement``):
    safeguarded 1-D Newton, from the damped Newton step ``1/(1+λ)`` (inside the domain), to
    1e-3 relative.
    """
    lowest = min(ratios)
    t_max = -1.0 / lowest if lowest < 0 else math.inf
    t = 1.0 / (1.0 + math.sqrt(decrement))
    for _ in range(10):
        terms = [q / (1.0 + t * q) for q in ratios]
        first = slope + t * curvature - sum(terms)
        second = curvature + sum(u * u for u in terms)
        nxt = t - first / second
        if nxt >= t_max:
            nxt = 0.5 * (t + t_max)
        elif nxt <= 0.0:
            nxt = 0.5 * t
        done = abs(nxt - t) <= 1e-3 * t
        t = nxt
        if done:
            break
    return t


@register_weighting("nash_mtl")
class NashMTL(GradientWeighting):
    """Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task Learning as a
    Bargaining Game", ICML 2022.

    The tasks bargain over the update ``d``, each with utility ``log(g_iᵀd)``; the Nash
    bargaining solution ``argmax_{‖d‖≤1} Σ_i log(g_iᵀd)`` is ``d ∝ Σ_i α_i g_i`` with
    ``α ∈ R^K_+`` solving ``GGᵀα = 1/α`` (elementwise): every task's directional derivative is
    ``g_iᵀd = 1/α_i``, and a task with a large gradient gets a small ``α_i``. The solution is
    scale-invariant per task (scaling ``g_i`` by ``s`` scales ``α_i`` by ``1/s``) and orthogonal
    gradients give ``α_i = 1/‖g_i‖``.

    The official code solves for ``α`` by a sequence of convex problems in cvxpy (ECOS), at most
    ``optim_niter = 20`` of them, warm-started at the previous ``α``; it divides the Gram matrix
    by its Frobenius norm for conditioning, but multiplies the factor back in its constraints,
    so its ``α`` solves ``Mα = 1/α`` for the unnormalised Gram ``M`` — as ours does. We solve
    the same equation in torch, exactly, by Newton's method on the equivalent convex problem
    ``min_{α>0} ½ αᵀMα − Σ log α_i`` (see :func:`nash_bargaining`; the conditioning is done by
    a diagonal rescaling instead, under which the equation is invariant); ``optim_niter``
    bounds its Newton steps. Where it does not converge — there is no solution when a task's
    gradient is zero or a non-negative combination of the gradients vanishes (the official
    solver then fails too) — we keep the previous coefficients of these tasks, as the official
    code does, count it in :attr:`fallbacks` and warn (once).

    As in the official code the combined loss is ``Σ_i α_i L_i`` (``task_gradients =
    "weighted"``: each task's own parameters get ``α_i`` times their gradient), and the shared
    gradient is then clipped to norm ``max_norm`` (1.0; 0 disables it). At the solution
    ``‖d‖² = αᵀMα = Σ_i α_i (1/α_i) = K``, so the default clipping always rescales ``d`` to unit
    norm. We clip by scaling the coefficients, ``c = α · min(1, max_norm / (√(αᵀMα) + 1e-6))``
    (``clip_grad_norm_``'s rule, with ``αᵀMα = K`` at the solution): in ``parameters`` mode the
    shared update is exactly the official one, in ``features`` mode it is the gradient at the
    shared representation that is clipped. Unlike the official code, the task-specific
    parameters also receive the clipped ``c_i`` rather than ``α_i``: the common factor is
    ``max_norm / √K``, constant while the same tasks are present (Adam is invariant to it). The
    official ``update_weights_every`` (solve every k steps, reuse ``α`` between) is the base
    class's ``update_every``; a step that reuses the coefficients reuses their clipping too
    (the official code clips every step; here that would need the per-task gradients the
    reuse saves).

    Args:
        tasks: names of all tasks, in order.
        max_norm: the norm the shared update is clipped to (1.0 officially); 0 turns it off.
        optim_niter: at most this many Newton steps per solve (the official bound on its
            convex sub-problems is 20; Newton needs 3-6 on well-posed problems).
        mode: ``parameters`` or ``features`` (see :class:`GradientWeighting`).
        update_every: solve every this many steps (the official ``update_weights_every``).
        engine: ``batched`` or ``loop``.
        log_losses: the method on the gradients of ``log L_k`` (see :class:`GradientWeighting`).
    """

    task_gradients = "weighted"

    def __init__(
        self,
        tasks: Sequence[str],
        max_norm: float = 1.0,
        optim_niter: int = 20,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        check_positive("max_norm", max_norm, allow_zero=True)
        if isinstance(optim_niter, bool) or not isinstance(optim_niter, int) or optim_niter < 1:
            raise ValueError(f"optim_niter={optim_niter!r}; expected an integer >= 1")
        self.max_norm = float(max_norm)
        self.optim_niter = optim_niter
        self.fallbacks = 0  # solves that did not converge (previous coefficients reused)

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``α`` solving ``Mα = 1/α``, scaled so that ``‖αᵀG‖ ≤ max_norm``."""
        alpha = nash_bargaining(gram, self.optim_niter)
        if alpha is not None:  # ‖αᵀG‖² = αᵀMα = Σ α_i (1/α_i) = K at the solution
            factor = self.max_norm / (math.sqrt(len(index)) + _CLIP_EPS)
            return alpha * factor if 0 < factor < 1 else alpha
        self.fallbacks += 1
        warn_once(
            "nash_mtl",
            "nash_mtl: no Nash bargaining solution found in "
            f"optim_niter={self.optim_niter} Newton steps (a zero task gradient, or "
            "gradients with a vanishing non-negative combination); reusing the previous "
            "coefficients",
        )
        alpha = self.coefficients[index].to(gram)
        if self.max_norm > 0:
            norm = (alpha @ gram @ alpha).clamp_min(0.0).sqrt()
            alpha = alpha * (self.max_norm / (norm + _CLIP_EPS)).clamp(max=1.0)
        return alpha
