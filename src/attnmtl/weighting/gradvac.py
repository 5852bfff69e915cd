"""Gradient Vaccine (GradVac): raise each pair's gradient cosine to an EMA target, then sum.

Axes: K tasks present in the batch, K-1 other tasks each task visits, T tasks in all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode
from attnmtl.weighting.pcgrad import random_orders
from attnmtl.weighting.registry import register_weighting

# Targets are kept off ±1 in the correction: a target of exactly 1 (an EMA that rounded up to
# 1 after many steps of identical gradients) asks for an infinite multiple of g_j.
_MAX_TARGET = 1.0 - 1e-6


@register_weighting("gradvac")
class GradVac(GradientWeighting):
    """Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR 2021.

    PCGrad only acts on negative cosines; GradVac pulls every pair's cosine up to a target
    ``φ̂_ij`` tracked by an exponential moving average of the observed cosines. For each task
    ``i``, start from ``g_i' = g_i`` and visit the other tasks ``j`` in a random order
    (Algorithm 1):

    - ``φ_ij = g_i'·g_j / (‖g_i'‖ ‖g_j‖)``, the cosine of the current ``g_i'`` with the
      original ``g_j``;
    - if ``φ_ij < φ̂_ij``: ``g_i' ← g_i' + ‖g_i'‖ (φ̂ √(1−φ²) − φ √(1−φ̂²)) / (‖g_j‖ √(1−φ̂²)) g_j``
      (Eq. 2), after which the cosine of ``g_i'`` with ``g_j`` is exactly ``φ̂_ij``;
    - ``φ̂_ij ← (1−β) φ̂_ij + β φ_ij`` (Eq. 3), with the cosine observed before the correction.

    The update is ``d = Σ_i g_i'``. With every ``φ̂ = 0`` the rule is PCGrad's projection.
    ``φ̂`` starts at 0 (as in LibMTL), is asymmetric (``φ̂_ij`` is
    measured from task i's modified gradient) and lives in a (T, T) buffer over all tasks:
    only the pairs of tasks present in a step are read and updated. A pair whose cosine is
    undefined (a zero gradient) is neither corrected nor averaged. In the correction the
    target is clamped to ``[−1 + 1e-6, 1 − 1e-6]``: a target of exactly 1 (an average that
    rounded up after many steps of identical gradients) would ask for an infinite multiple.

    Order: each task draws its own random order of the others
    (:func:`~attnmtl.weighting.pcgrad.random_orders`, torch's global generator), as
    Algorithm 1's "random order" and LibMTL's per-task shuffle. As in PCGrad, everything is
    computed from the Gram matrix: ``g_i' = Σ_j C_ij g_j``, ``‖g_i'‖² = C_i GGᵀ C_iᵀ``, and
    ``c = 1ᵀC``.

    Granularity: the paper also applies the rule per layer (or per parameter matrix), with one
    target per pair and layer. Here the gradient is one vector (the whole shared part in
    ``parameters`` mode, the representation in ``features`` mode): per-layer granularity is
    not offered, as a Gram matrix of the whole gradient cannot be split by layer.

    Task-specific parameters receive their own task's raw gradient.

    Args:
        tasks: names of all tasks, in order.
        beta: ``β``, the EMA rate of the targets (1e-2 in the paper; LibMTL's default is 0.5).
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`.
    """

    task_gradients = "raw"
    targets: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        beta: float = 0.01,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        if isinstance(beta, bool) or not (math.isfinite(beta) and 0 < beta <= 1):
            raise ValueError(f"beta={beta!r}; expected a number in (0, 1]")
        self.beta = float(beta)
        t = len(self.tasks)
        # φ̂_ij (row i's target towards task j), in float64 like the Gram it is compared with
        self.register_buffer("targets", torch.zeros(t, t, dtype=torch.float64))
        self._pair_cache: dict[tuple[tuple[int, ...], torch.device], Tensor] = {}

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``c = 1ᵀC`` of the vaccinated gradients; updates the present pairs' targets."""
        k = gram.shape[0]
        if k == 1:  # no pair
            return gram.new_ones(1)
        dtype, device = gram.dtype, gram.device
        tiny = torch.finfo(dtype).tiny
        one = gram.new_ones(())
        # Work with unit vectors u_j = g_j / ‖g_j‖ (u_j = 0 for a zero gradient):
        # g_i' = ‖g_i‖ Σ_j B_ij u_j, own_i = ‖g_i'‖ / ‖g_i‖, R = the cosines of the g_j.
        sq = gram.diagonal()
        norm = sq.sqrt()  # ‖g_j‖ (K,)
        nonzero = norm > 0
        inv = norm / sq.clamp_min(tiny)  # 1 / ‖g_j‖, 0 for a zero gradient
        cosines = gram * torch.outer(inv, inv)  # R (K, K)
        order = random_orders(k, device, self.job)  # (K-1, K): round s pairs i with order[s, i]
        pairs = self._pairs(index, device).T.gather(0, order)  # φ̂'s flat positions (K-1, K)
        flat = self.targets.view(-1)
        target = flat[pairs].to(dtype)  # φ̂_{i, order[s, i]} (K-1, K)
        capped = target.clamp(-_MAX_TARGET, _MAX_TARGET)
        ratio = capped / torch.addcmul(one, capped, capped, value=-1.0).sqrt_()  # φ̂/√(1−φ̂²)
        valid = nonzero[order] & nonzero  # both gradients nonzero (K-1, K)
        ratio = ratio * valid  # no correction towards (or of) a zero gradient
        coef = torch.eye(k, dtype=dtype, device=device)  # B (K, K)
        at = order + torch.arange(0, k * k, k, device=device)  # B_{i, order[s, i]}, flat
        coef_flat = coef.view(-1)
        # In units of ‖g_i‖: p = g_i'·u_j = ‖g_i'‖ φ, q = ‖g_i'‖ √(1−φ²), own2 = ‖g_i'‖².
        # Eq. 2 adds ‖g_i'‖ t u_j with t = (φ̂ √(1−φ²) − φ √(1−φ̂²)) / √(1−φ̂²), which is
        # sin(θ−θ̂) / sin θ̂ for φ = cos θ, φ̂ = cos θ̂: positive exactly when φ < φ̂. So
        # ‖g_i'‖ (t + φ) = max(q φ̂/√(1−φ̂²), p) with t clamped at 0, and afterwards
        # ‖g_i'‖² = that² + q² (the component orthogonal to g_j is unchanged).
        own2 = nonzero.to(dtype)  # (K,); a zero g_i stays zero
        inners, norms2 = [], []
        for rows, hit, rate in zip(cosines[order], at, ratio, strict=True):
            # rows: R_{j_i} as row i; hit: where B_{i, j_i} is; rate: φ̂/√(1−φ̂²) of the pair
            p = torch.linalg.vecdot(coef, rows)
            q2 = torch.addcmul(own2, p, p, value=-1.0).clamp_min_(0.0)
            top = torch.maximum(q2.sqrt() * rate, p)
            coef_flat.index_add_(0, hit, top - p)  # g_i' += ‖g_i'‖ t u_j
            inners.append(p)
            norms2.append(own2)
            own2 = torch.addcmul(q2, top, top)
        own = torch.stack(norms2).sqrt_()  # ‖g_i'‖ / ‖g_i‖ before each round (K-1, K)
        phis = (torch.stack(inners) / own.clamp_min(tiny)).clamp_(-1.0, 1.0)  # φ_ij
        defined = valid & (own > 0)  # the cosine existed
        updated = torch.where(defined, target.lerp(phis, self.beta), target)
        flat.index_put_((pairs,), updated.to(flat.dtype))  # Eq. 3
        return (norm @ coef) * inv

    def _pairs(self, index: list[int], device: torch.device) -> Tensor:
        """(K, K) flat positions ``index[i] * T + index[m]`` in :attr:`targets`, cached."""
        key = (tuple(index), device)
        cached = self._pair_cache.get(key)
        if cached is None:
            rows = torch.tensor(index, device=device)
            cached = rows[:, None] * len(self.tasks) + rows
            self._pair_cache[key] = cached
        return cached
