"""GradDrop: keep, per entry, the gradients of one sign, drawn by how consistent the signs are.

Axes: K tasks present in the batch, B samples, D entries of a sample's representation (or N
shared parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnmtl.core.distributed import agree
from attnmtl.weighting.gradient import Engine, Mode, Rows, RowWeighting
from attnmtl.weighting.registry import register_weighting


@register_weighting("graddrop")
class GradDrop(RowWeighting):
    """Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign: Optimizing
    Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020.

    At every entry of the shared representation, the tasks' gradients may disagree in sign.
    GradDrop measures their sign purity ``P = ½(1 + Σ_k ∇_k / Σ_k |∇_k|)`` (1: all positive,
    0: all negative), draws ``U ~ Uniform(0, 1)`` per entry, and keeps only the positive
    gradients where ``P > U`` and only the negative ones where ``P < U``:
    ``M_k = 1[P > U] 1[∇_k > 0] + 1[P < U] 1[∇_k < 0]``, update ``Σ_k (ℓ + (1 − ℓ) M_k) ∇_k``
    with a leak ``ℓ`` (0: the paper's GradDrop; 1: plain summation).

    In ``features`` mode (the paper's placement, the default) ``∇_k`` is the batch-marginalised
    signal ``Σ_b sign(A_b) ∇_{A_b} L_k`` of the paper's §3.2 (``A`` the representation, as
    LibMTL computes it), one mask entry per representation entry, applied to every sample's
    gradient. In ``parameters`` mode the mask acts on the shared parameters' gradients
    directly (torchjd's ``GradDrop``). ``U`` is drawn from torch's generator (rank 0's under
    torchrun). Task-specific parameters take their own raw gradient; the weights reported
    are 1.

    Args:
        tasks: names of all tasks, in order.
        leak: ``ℓ`` in [0, 1], the same for every task; 0 as in the paper and LibMTL.
        mode, engine, log_losses: see :class:`~attnmtl.weighting.gradient.GradientBased`.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        leak: float = 0.0,
        mode: Mode = "features",
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks, mode=mode, engine=engine, log_losses=log_losses)
        if isinstance(leak, bool) or not (0.0 <= float(leak) <= 1.0):
            raise ValueError(f"leak={leak!r}; expected a number in [0, 1]")
        self.leak = float(leak)

    def direction(self, rows: Rows, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        """Mask each task's gradient by the drawn sign; sum."""
        grads = rows.matrix
        k = grads.shape[0]
        if rows.features is not None:  # (K, B, D) per sample; the signal sums over samples
            per = grads.view(k, rows.features.shape[0], -1)
            signs = rows.features.reshape(1, per.shape[1], -1).sign().to(per.dtype)
            signal = (per * signs).sum(1)  # (K, D)
        else:
            per, signal = grads[:, None], grads
        purity = 0.5 * (1 + signal.sum(0) / (signal.abs().sum(0) + 1e-7))
        draw = agree(lambda: torch.rand_like(purity), self.job)
        mask = ((purity > draw) & (signal > 0)) | ((purity < draw) & (signal < 0))
        keep = self.leak + (1 - self.leak) * mask.to(per.dtype)  # (K, D)
        update = (per * keep[:, None]).sum(0).reshape(-1)
        return update, torch.ones(k, dtype=losses.dtype, device=losses.device)
