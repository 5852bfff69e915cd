"""Small exact solvers on a Gram matrix, in torch, on its device.

Axes: K tasks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def ridge(gram: Tensor, eps: float = 1e-10) -> Tensor:
    """``gram + eps·diag(gram)``: keeps the linear systems of collinear gradients solvable.

    Each gradient is augmented with a private coordinate of ``√eps`` times its own norm, so the
    shift is relative to each task's own squared norm: it changes every task's part of the
    problem by about ``eps`` relative, however small that task's gradient is. (A shift relative
    to the *mean* squared norm was 100 times a 1e-6-norm task's own and moved MGDA's answer
    7e-4 off its optimality conditions.) Zero gradients stay zero.
    """
    return gram + torch.diag_embed(torch.diagonal(gram) * eps)


def affine_min(gram: Tensor, support: Tensor) -> Tensor:
    """The minimiser of ``wᵀ M w`` over ``Σ w = 1`` with ``w`` zero outside ``support`` (bool, K).

    For positive-definite ``M_SS`` (see :func:`ridge`) it is ``M_SS⁻¹1 / (1ᵀM_SS⁻¹1)``.
    """
    idx = support.nonzero().squeeze(1)
    sub = gram.index_select(0, idx).index_select(1, idx)
    x = torch.linalg.solve(sub, torch.ones_like(idx, dtype=gram.dtype))
    w = torch.zeros(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return w.index_copy_(0, idx, x / x.sum())


def min_norm(gram: Tensor, tol: float = 1e-12, max_iter: int | None = None) -> Tensor:
    """Weights ``w`` on the simplex minimising ``‖Σ_k w_k g_k‖² = wᵀ M w`` for ``M = GGᵀ``.

    The min-norm point of the convex hull of the gradients, found exactly by Wolfe's active-set
    algorithm (Wolfe, "Finding the nearest point in a polytope", Math. Programming 1976): start
    at the shortest gradient; while some gradient ``g_j`` has ``g_jᵀd < dᵀd`` (the current point
    ``d`` is not optimal), add ``j`` to the support, move to the affine minimiser of the support,
    and step back to the simplex (dropping coordinates that reach zero) when that minimiser has a
    non-positive weight. It ends after a few linear solves of size ≤ K + 1 (Sener & Koltun's
    MGDA uses Frank-Wolfe, which reaches the same point approximately in many more steps).

    Args:
        gram: ``M`` (K, K), symmetric positive semi-definite.
        tol: optimality tolerance: it stops when every ``g_j`` has
            ``g_jᵀd >= ‖d‖² − tol·‖g_j‖‖d‖`` (relative to each task's own scale, so a tiny
            gradient's condition is met as tightly as a large one's).
        max_iter: safety bound on the outer iterations (default 4K + 10).

    Returns:
        ``w`` (K,), ``w ≥ 0``, ``Σ w = 1``. All-zero gradients give uniform weights; zero
        gradients among others share the weight (``d = 0``).
    """
    k = gram.shape[0]
    diag = torch.diagonal(gram)
    scale = float(diag.max()) if k else 0.0
    if k == 1 or not scale > 0.0:
        return torch.full((k,), 1.0 / max(k, 1), dtype=gram.dtype, device=gram.device)
    zero = diag <= 0
    if bool(zero.any()):  # a zero gradient: d = 0 is the min-norm point (shared among them)
        return zero.to(gram.dtype) / zero.sum()
    m = ridge(gram)
    # Start from the best corral we can guess cheaply: the affine minimiser over every task is
    # the answer whenever it is positive (interior optimum, one solve); otherwise its positive
    # part's affine minimiser, when positive, is a valid start; otherwise the shortest gradient.
    support = torch.ones(k, dtype=torch.bool, device=gram.device)
    w = affine_min(m, support)
    if not bool((w > 0).all()):
        support = w > 0
        w = affine_min(m, support) if bool(support.any()) else w
        if not bool(support.any()) or not bool((w[support] > 0).all()):
            start = int(torch.argmin(diag))
            support = torch.zeros(k, dtype=torch.bool, device=gram.device)
            support[start] = True
            w = torch.zeros(k, dtype=gram.dtype, device=gram.device)
            w[start] = 1.0
    norms = torch.diagonal(m).sqrt()
    for _ in range(max_iter or 4 * k + 10):
        mw = m @ w
        value = w @ mw  # ‖d‖²
        j = int(torch.argmin(mw))
        if float(value - mw[j]) <= tol * float(value.sqrt() * norms[j]) or bool(support[j]):
            break
        support[j] = True
        for _ in range(k + 1):  # inner loop: at most K drops
            y = affine_min(m, support)
            if bool((y[support] > 0).all()):
                w = y
                break
            # step from w toward y until the first support weight hits zero, drop it
            blocking = support & (y <= 0)
            gap = w[blocking] - y[blocking]  # >= 0: w >= 0 > y on blocking coordinates
            ratios = torch.where(gap > 0, w[blocking] / gap.clamp_min(1e-300), 0.0)
            theta = float(ratios.min().clamp(0.0, 1.0))
            w = (w + theta * (y - w)).clamp_min(0.0)
            support = support & (w > 0)
            w = w * support
            w = w / w.sum()
    return w


def simplex_projection(v: Tensor) -> Tensor:
    """The Euclidean projection of ``v`` (K,) onto the simplex ``{w >= 0, Σ w = 1}``.

    The sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al., ICML 2008): with ``u``
    the entries sorted in decreasing order and ``ρ`` the largest ``j`` with
    ``u_j > (Σ_{i<=j} u_i − 1)/j``, the projection is ``max(v − θ, 0)`` for
    ``θ = (Σ_{i<=ρ} u_i − 1)/ρ``.
    """
    u = v.sort(descending=True).values
    cumulative = u.cumsum(0) - 1
    ranks = torch.arange(1, len(v) + 1, dtype=v.dtype, device=v.device)
    rho = int((u > cumulative / ranks).nonzero().max()) + 1
    theta = cumulative[rho - 1] / rho
    return (v - theta).clamp_min(0)


def simplex_projection_np(v: np.ndarray) -> np.ndarray:
    """:func:`simplex_projection` on a float64 array, for solvers that iterate on a K×K
    problem many times a step (a few microseconds a call where torch takes tens)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1
    rho = int(np.nonzero(u > cumulative / np.arange(1, len(v) + 1))[0][-1]) + 1
    return np.maximum(v - cumulative[rho - 1] / rho, 0.0)
