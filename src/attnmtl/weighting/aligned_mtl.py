"""Aligned-MTL: align the task gradients into an orthogonal, equal-norm system.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode
from attnmtl.weighting.registry import register_weighting

ScaleMode = Literal["min", "median", "rmse"]
SCALE_MODES: tuple[ScaleMode, ...] = ("min", "median", "rmse")
# The official code's default tolerance is max(λ) · K · eps of float32 (the gradients' dtype).
_FLOAT32_EPS = torch.finfo(torch.float32).eps


@register_weighting("aligned_mtl")
class AlignedMTL(GradientWeighting):
    """Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023.

    Conflicting and dominating gradients show up as an ill-conditioned gradient system; Aligned-
    MTL replaces the task gradients ``G`` (K, N) by the closest (Procrustes) system with
    condition number 1. With the eigendecomposition ``M = GGᵀ = VΛVᵀ`` restricted to the
    eigenvalues above the tolerance (rank r; ``G = V Λ^{1/2} Uᵀ``), the aligned gradients are
    ``Ĝ = BG = σ V Uᵀ`` with ``B = σ V Λ^{-1/2} Vᵀ`` and ``σ = √λ_min`` (the smallest kept
    singular value): orthogonal rows of equal norm on the span, ``ĜĜᵀ = σ² V Vᵀ``. The update
    is ``d = wᵀĜ``, i.e. ``c = Bᵀw = Bw``, with pre-defined task weights ``w`` (the official
    code sums the aligned gradients: ``w = 1``, our default). Orthogonal gradients of equal
    norm are left unchanged; orthogonal gradients of different norms are all shrunk to the
    smallest norm.

    Following the official code, the rank is decided by the tolerance ``max(λ) · rcond`` with
    ``rcond = K · eps(float32)`` by default (the gradients are float32), and ``scale_mode``
    chooses ``σ²`` among the kept eigenvalues: their minimum (``min``, the paper's choice), their
    median (``median``; the lower middle value for an even count, as ``torch.median``) or their
    mean (``rmse``). Task-specific parameters receive their raw gradients (the official default
    ``scale_decoder_grad=False``). LibMTL's version calls ``torch.symeig``, removed in PyTorch 2;
    we use ``torch.linalg.eigh``. An all-zero Gram keeps no eigenvalue and gives ``c = 0``.

    The paper's upper-bound variant, Aligned-MTL-UB, aligns the gradients with respect to the
    shared representation instead of the shared parameters (one backward pass through the
    encoder): that is this class with ``mode="features"``.

    Args:
        tasks: names of all tasks, in order.
        scale_mode: ``min`` (default), ``median`` or ``rmse``: the common norm ``σ`` of the
            aligned gradients.
        rcond: eigenvalues at most ``rcond · max(λ)`` are dropped; None for ``K · eps(float32)``.
        task_weights: ``w``, one positive weight per task (None: all 1, as the official code).
        mode: ``parameters`` or ``features`` (``features`` is Aligned-MTL-UB).
        update_every: solve every this many steps and reuse the coefficients in between.
        engine: ``batched`` or ``loop``.
        log_losses: the method on the gradients of ``log L_k`` (see :class:`GradientWeighting`).
    """

    task_gradients = "raw"
    task_weights: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        scale_mode: ScaleMode = "min",
        rcond: float | None = None,
        task_weights: Sequence[float] | None = None,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        if scale_mode not in SCALE_MODES:
            raise ValueError(
                f"scale_mode={scale_mode!r}; expected one of: {', '.join(SCALE_MODES)}"
            )
        if rcond is not None and (
            isinstance(rcond, bool) or not (math.isfinite(rcond) and 0 <= rcond < 1)
        ):
            raise ValueError(f"rcond={rcond!r}; expected None or a number in [0, 1)")
        k = len(self.tasks)
        weights = [1.0] * k if task_weights is None else list(task_weights)
        if len(weights) != k or not all(
            not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in weights
        ):
            raise ValueError(
                f"task_weights={task_weights!r}; expected {k} positive numbers, one per task"
            )
        self.scale_mode: ScaleMode = scale_mode
        self.rcond = rcond
        self.register_buffer(
            "task_weights", torch.tensor(weights, dtype=torch.float64), persistent=False
        )

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``c = Bw`` with ``B = σ V Λ^{-1/2} Vᵀ`` on the eigenvalues above the tolerance."""
        k = gram.shape[0]
        weights = self.task_weights[index].to(gram)
        eigenvalues, vectors = torch.linalg.eigh(gram)  # ascending
        rcond = k * _FLOAT32_EPS if self.rcond is None else self.rcond
        largest = eigenvalues[-1]
        keep = eigenvalues > largest * rcond
        if self.scale_mode == "min":
            # min over the kept ones (the largest is kept whenever anything is)
            sigma2 = torch.where(keep, eigenvalues, largest).min()
        elif self.scale_mode == "median":
            nan = torch.full_like(eigenvalues, math.nan)
            sigma2 = torch.nanmedian(torch.where(keep, eigenvalues, nan)).nan_to_num(0.0)
        else:
            total = torch.where(keep, eigenvalues, 0.0).sum()
            sigma2 = total / keep.sum().clamp_min(1)
        inv_sqrt = torch.where(keep, eigenvalues, math.inf).rsqrt()  # Λ^{-1/2}, 0 off the span
        return sigma2.clamp_min(0.0).sqrt() * (vectors @ (inv_sqrt * (vectors.T @ weights)))
