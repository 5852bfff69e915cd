"""PCGrad: project each task gradient off the gradients it conflicts with, then sum.

Axes: K tasks present in the batch, K-1 other tasks each task visits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnmtl.core.distributed import Distributed, agree
from attnmtl.weighting.gradient import GradientWeighting
from attnmtl.weighting.registry import register_weighting


def random_orders(
    k: int, device: torch.device | None = None, job: Distributed | None = None
) -> Tensor:
    """Per task, the other tasks in a uniformly random order, drawn independently per task.

    Returns (K-1, K): column ``i`` is a permutation of ``{0..K-1} \\ {i}``, so row ``s`` holds
    every task's ``s``-th partner (the tasks advance together, one partner per round). One draw
    of K×K uniforms from torch's global generator on ``device``: column ``i`` sorts its keys,
    with its own key set above the others (so ``i`` sorts last and is dropped). Under
    torchrun (``job``) every process uses rank 0's draw.
    """
    keys = agree(lambda: torch.rand(k, k, device=device), job)
    keys.diagonal().fill_(2.0)
    return keys.argsort(dim=0)[: k - 1]


@register_weighting("pcgrad")
class PCGrad(GradientWeighting):
    """Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning",
    NeurIPS 2020.

    For each task ``i``, start from ``g_i' = g_i`` and visit the other tasks ``j`` in a random
    order; whenever ``g_i'·g_j < 0``, project the conflicting component out::

        g_i' ← g_i' − (g_i'·g_j / ‖g_j‖²) g_j

    always against the original ``g_j`` (Algorithm 1, and the official code). The update is
    ``d = Σ_i g_i'``.

    Every projection adds a multiple of some ``g_j``, so ``g_i' = Σ_j C_ij g_j`` with ``C``
    starting at the identity, ``g_i'·g_j = C_i · (GGᵀ)_j`` and the update is ``d = cᵀG`` with
    ``c = 1ᵀC``: the whole surgery runs on the Gram matrix. All K tasks advance together, one
    partner per round (K-1 rounds of (K, K) tensor work, no per-pair Python loop).

    Order: as the official PyTorch implementation shuffles the task list once per task, each
    task draws its own random order of the others (:func:`random_orders`, torch's global
    generator, so a resumed run with the restored RNG state draws the same orders). A task is
    not projected against itself (the paper's ``j ≠ i``). A zero gradient ``g_j`` has
    ``g_i'·g_j = 0`` and causes no projection (no division by ``‖g_j‖² = 0``).

    PCGrad leaves task-specific parameters alone: they receive their own task's raw gradient.
    PCGrad has no hyperparameters.

    Args:
        tasks: names of all tasks, in order.
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`.
    """

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``c = 1ᵀC`` of the projected gradients ``g_i' = Σ_j C_ij g_j``."""
        k = gram.shape[0]
        order = random_orders(k, gram.device, self.job)  # (K-1, K): round s pairs i, order[s, i]
        sq = gram.diagonal().clamp_min(torch.finfo(gram.dtype).tiny)  # ‖g_j‖² (K,)
        # [s, i] = g_j·g_m / ‖g_j‖² over m, for j = order[s, i] (zero for a zero gradient)
        partner = (gram / sq[:, None])[order]  # (K-1, K, K)
        at = order + torch.arange(0, k * k, k, device=gram.device)  # C_{i, order[s, i]}, flat
        coef = torch.eye(k, dtype=gram.dtype, device=gram.device)
        coef_flat = coef.view(-1)
        for rows, hit in zip(partner, at, strict=True):
            ratio = torch.linalg.vecdot(coef, rows)  # g_i'·g_j / ‖g_j‖², j = i's partner (K,)
            coef_flat.index_add_(0, hit, ratio.clamp_(max=0.0), alpha=-1.0)
        return coef.sum(0)
