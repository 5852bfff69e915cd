"""UPGrad: every task's gradient projected onto the dual cone of all of them, then averaged.

Axes: K tasks present in the batch, P projection problems solved side by side.

Also home to the exact small QP solver UPGrad and CAGrad share (:func:`cone_projection`,
:func:`ball_projection`): for ``x = Gᵀu``, the Euclidean projection of ``x`` onto the polyhedron
``{d : G d >= t 1}`` is ``d = x + Gᵀλ`` with ``λ = argmin_{λ>=0} ½λᵀMλ + λᵀ(Mu - t1)``,
``M = GGᵀ``, and ``‖d - x‖² = λᵀMλ``. UPGrad projects each ``g_i`` onto the dual cone
(``t = 0``); CAGrad raises ``t`` until the projection of ``g0`` is ``c‖g0‖`` away.

Both are solved exactly by a primal-dual active-set method: for a guessed set F of tight
constraints, ``λ_F = t M_FF⁻¹1 - M_FF⁻¹(Mu)_F`` in closed form (and ``t`` too, a root of a
quadratic, when the distance is prescribed); F then becomes the constraints with ``λ > 0`` or a
negative slack, and when F repeats the KKT conditions hold. From the guesses used here this
takes one to three batched K×K solves. Should it cycle (it may, for general Gram matrices), the
parametric path in ``t`` (:func:`_path`: one constraint enters or leaves per piece) takes over;
it always terminates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode
from attnmtl.weighting.registry import register_weighting

# Added to the diagonal of the (normalised) Gram matrix: keeps every active-set system
# nonsingular when gradients are collinear or K exceeds their rank. The solution is then exact
# for the gradients augmented with sqrt(RIDGE) times a unit vector of their own, so a constraint
# <g_j, d> >= t holds to within RIDGE * lambda_j in normalised units.
RIDGE = 1e-12
# Active-set decisions ignore multipliers and slacks smaller than this (normalised units).
TOL = 1e-12


def cone_projection(gram: Tensor, guess: Tensor, b: Tensor | None = None) -> Tensor:
    """Multipliers ``λ`` (P, K) of P projections onto ``{d : G d >= 0}``.

    Problem p projects ``x_p = Gᵀu_p``: ``π(x_p) = x_p + Gᵀλ_p``,
    ``λ_p = argmin_{λ>=0} ‖x_p + Gᵀλ‖²``. By default the K rows themselves (``u_p = e_p``).

    Args:
        gram: ``M`` (K, K), float64, with a unit diagonal (including :data:`RIDGE`).
        guess: the first guess of each problem's tight constraints (P, K), bool.
        b: ``G x_p = M u_p`` (P, K); None: ``M`` (the rows).
    """
    b = gram if b is None else b
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    active = guess
    for _ in range(max(4, gram.shape[0])):
        lam = -_tight_solve_e(gram, eye, b, active)
        slack = torch.addmm(b, lam, gram)  # ⟨g_j, π(x_p)⟩
        update = torch.where(active, lam > TOL, slack < -TOL)
        if torch.equal(update, active):
            return lam.clamp_min(0)
        active = update
    return _path(gram, b, 0.0, None)


def ball_projection(gram: Tensor, b: Tensor, guess: Tensor, floor: float, radius2: float) -> Tensor:
    """Multipliers ``λ`` (K,) of the projection of ``x = Gᵀu`` onto ``{d : G d >= t 1}``.

    ``t`` is the largest level ``<= floor`` whose projection is within ``‖d - x‖² <= radius2``.

    Args:
        gram: ``M`` (K, K), float64, with a unit mean diagonal (including :data:`RIDGE`).
        b: ``G x = M u`` (K,).
        guess: the first guess of the tight constraints (K,), bool.
        floor: the highest level (``inf`` for none).
        radius2: the squared distance, > 0.
    """
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    b = b[None]  # (1, K)
    weights = torch.cat((torch.ones_like(b), b))  # (2, K)
    active = guess[None]
    for _ in range(max(4, gram.shape[0])):
        sol = _tight_solve(gram, eye, b, active)  # (1, K, 2): a, e
        # λ(t) = t a - e; ‖Gᵀλ‖² = A t² - 2 B t + C with A = 1ᵀa, B = 1ᵀe = bᵀa, C = bᵀe
        (big_a, big_b), (_, big_c) = (weights @ sol[0]).tolist()
        if big_a <= 0:  # F empty: λ = 0 up to t = min b, where the lowest constraint enters
            lowest = b.min()
            if floor <= float(lowest):
                return torch.zeros_like(b[0])
            active = b <= lowest
            continue
        disc = max(big_b * big_b - big_a * (big_c - radius2), 0.0)
        t = min(floor, (big_b + math.sqrt(disc)) / big_a)
        lam = sol[..., 0] * t - sol[..., 1]
        slack = torch.addmm(b, lam, gram).sub_(t)
        update = torch.where(active, lam > TOL, slack < -TOL)
        if torch.equal(update, active):
            return lam[0].clamp_min(0)
        active = update
    return _path(gram, b, floor, torch.tensor([radius2], dtype=gram.dtype))[0]


def set_preference(weighting: GradientWeighting, weights: Sequence[float] | None) -> None:
    """Validate a per-task preference ``weights`` (finite, >= 0, not all zero) and keep it as
    the non-persistent buffer ``preference``; None: the mean (``uniform``)."""
    k = len(weighting.tasks)
    if weights is not None:
        values = [float(w) for w in weights]
        if (
            len(values) != k
            or not all(math.isfinite(w) and w >= 0 for w in values)
            or not any(w > 0 for w in values)
        ):
            raise ValueError(f"weights={weights!r}; expected {k} finite numbers >= 0, not all zero")
        weighting.register_buffer("preference", torch.tensor(values), persistent=False)
    setattr(weighting, "uniform", weights is None)  # noqa: B010 (set on any strategy)


def preference(weighting: GradientWeighting, index: list[int], gram: Tensor) -> Tensor:
    """The present tasks' preference weights (K,): their given ones, or 1/K each."""
    k = gram.shape[0]
    if getattr(weighting, "uniform", True):
        return torch.full((k,), 1.0 / k, dtype=gram.dtype, device=gram.device)
    given: Tensor = getattr(weighting, "preference")  # noqa: B009
    return given[index].to(gram.dtype)


def unit_gram(gram: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``‖g_k‖`` (K,), ``1/‖g_k‖`` (0 for a zero gradient) and the Gram matrix of the unit
    gradients with ``1 + RIDGE`` on its diagonal (a dummy 1 for a zero gradient, which then
    constrains nothing)."""
    norm = gram.diagonal().clamp_min(0).sqrt()
    inv = norm.reciprocal().nan_to_num(posinf=0.0)
    unit = gram * inv[:, None] * inv[None, :]
    unit.diagonal().fill_(1 + RIDGE)
    return norm, inv, unit


def _tight_solve(gram: Tensor, eye: Tensor, b: Tensor, active: Tensor) -> Tensor:
    """``(a, e)`` (P, K, 2) with ``M_FF a_F = 1``, ``M_FF e_F = b_F`` and zeros outside F.

    On F, ``λ(t) = t a - e`` makes every constraint in F tight at level ``t``.
    """
    system = torch.where(active[:, :, None] & active[:, None, :], gram, eye)  # (P, K, K)
    f = active.to(gram.dtype)
    return torch.linalg.solve_ex(system, torch.stack((f, f * b), -1))[0]


def _tight_solve_e(gram: Tensor, eye: Tensor, b: Tensor, active: Tensor) -> Tensor:
    """``e`` (P, K) alone: ``M_FF e_F = b_F``, zeros outside F."""
    system = torch.where(active[:, :, None] & active[:, None, :], gram, eye)  # (P, K, K)
    return torch.linalg.solve_ex(system, (b * active)[..., None])[0][..., 0]


def _path(gram: Tensor, b: Tensor, floor: float, radius2: Tensor | None) -> Tensor:
    """The fallback: follow each projection as ``t`` rises from ``min_j b_j``.

    Problem p projects ``x_p`` with ``G x_p = b_p`` (P, K). On a piece with tight set F,
    ``λ(t)`` and the slacks are affine in ``t``; the piece ends where a multiplier reaches 0
    (that constraint leaves F), a slack reaches 0 (it enters), or the level reaches ``floor``
    or the radius (the answer).
    """
    k = gram.shape[0]
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    t = b.min(-1).values
    active = torch.nn.functional.one_hot(b.argmin(-1), k).bool()
    lam = torch.zeros_like(b)
    done = t >= floor
    if radius2 is not None:
        radius2 = radius2.to(b.device)
        done = done | (radius2 <= 0)
    for _ in range(4 * k + 4):
        if bool(done.all()):
            break
        a, e = _tight_solve(gram, eye, b, active).unbind(-1)
        rate = torch.where(active, a, a @ gram - 1)  # d/dt of λ_j (j in F) or of slack_j
        value = torch.where(active, -e, b - e @ gram) + t[:, None] * rate
        hits = torch.where(rate < -TOL, t[:, None] + value.clamp_min(0) / -rate, math.inf)
        t_event, j_event = hits.min(-1)
        end = torch.full_like(t, floor)
        if radius2 is not None:
            big_a = a.sum(-1).clamp_min(1e-300)
            big_b = e.sum(-1)
            disc = (big_b * big_b - big_a * ((e * b).sum(-1) - radius2)).clamp_min(0)
            end = torch.minimum(end, (big_b + disc.sqrt()) / big_a)
        finish = (end <= t_event) & ~done
        t_new = torch.where(finish, torch.maximum(end, t), t_event)
        lam = torch.where(finish[:, None], t_new[:, None] * a - e, lam)
        flip = torch.nn.functional.one_hot(j_event, k).bool() & ~(finish | done)[:, None]
        active = active ^ flip
        t = torch.where(done, t, t_new)
        done = done | finish
    return lam.clamp_min(0)


@register_weighting("upgrad")
class UPGrad(GradientWeighting):
    """Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232, 2024.

    Unconflicting projection of gradients: each task gradient ``g_i`` is projected onto the
    dual cone of all of them, ``C = {x : ⟨g_j, x⟩ >= 0 for all j}``, and the projections are
    averaged: ``d = Σ_i w_i π_C(g_i)`` with ``w_i = 1/K`` (the paper's mean). Every task's
    gradient then has a non-negative inner product with ``d`` (no task's loss increases to
    first order), and when no two gradients conflict every ``g_i`` already lies in ``C`` and
    ``d`` is the mean gradient.

    In Gram form (the paper's Proposition 1): ``π_C(Gᵀu) = Gᵀv`` with
    ``v = argmin_{v >= u} vᵀMv``, ``M = GGᵀ``. With ``u = e_i`` and ``v = e_i + λ``, ``λ >= 0``
    are the multipliers of the constraints ``⟨g_j, x⟩ >= 0``, so ``d = cᵀG`` with
    ``c = Σ_i w_i (e_i + λ_i)``. The K projections are solved together and exactly by an
    active-set method (:func:`cone_projection`: typically two or three batched K×K solves), on
    the Gram matrix of the unit gradients ``g_j / ‖g_j‖`` (the cone and the projections do not
    depend on the gradients' norms, and a zero gradient constrains nothing) plus ``1e-12`` on
    its diagonal. torchjd instead normalises the Gram matrix by its trace and adds ``1e-4`` to
    its diagonal (``norm_eps``, ``reg_eps``), as its QP solver needs a positive-definite
    matrix; ours only needs the tiny ridge for collinear gradients, which leaves conflicts of
    at most about ``1e-12 ‖g_j‖ max_i ‖g_i‖``, so neither is an option here.

    The average is the paper's and torchjd's default (its update is K times smaller than the
    sum that ``equal`` weighting uses); ``weights`` replaces it, as torchjd's ``pref_vector``.

    Args:
        tasks: names of all tasks, in order.
        weights: ``w``, one non-negative weight per task (not all zero), combining the
            projections; the tasks present in a batch use theirs as given (no renormalisation).
            None (default): ``1/K`` for each of the K tasks present.
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`.
    """

    preference: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Sequence[float] | None = None,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        set_preference(self, weights)

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``c = Σ_i w_i (e_i + λ_i)``, ``λ_i`` the multipliers of ``g_i``'s projection."""
        w = preference(self, index, gram)
        if not bool((gram < 0).any()):  # no conflict: every g_i is in the cone
            return w
        norm, inv, unit = unit_gram(gram)
        lam = cone_projection(unit, unit < 0)  # (K, K): row i for g_i
        # π(g_i) = ‖g_i‖ π(ĝ_i) = g_i + Σ_j ‖g_i‖ λ_ij / ‖g_j‖ g_j
        return w + (w * norm) @ (lam * inv[None, :])
