"""Impartial multi-task learning (IMTL): equal projections onto every task's gradient direction,
with learnable loss scales.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from attnmtl.weighting.base import StepContext
from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode
from attnmtl.weighting.imtl_l import scaled_loss
from attnmtl.weighting.registry import register_weighting

Variant = Literal["g", "l", "hybrid"]
VARIANTS: tuple[Variant, ...] = ("g", "l", "hybrid")

# Singular values of DUᵀ below this times max_t ‖g_t‖ are treated as zero: with collinear
# task gradients the balance is undetermined (or set by rounding alone).
_SINGULAR = 1e-8


def imtl_g(gram: Tensor) -> Tensor:
    """IMTL-G's ``α`` (K,) from the Gram matrix ``GGᵀ`` of the (scaled) task gradients.

    The paper's closed form with the task of largest gradient norm as the reference ``r`` (any
    reference gives the same ``α`` when it is unique): ``D`` has rows ``g_r − g_t``, ``U`` rows
    ``u_r − u_t`` (``u_t = g_t / ‖g_t‖``), ``α_{t≠r} = g_r Uᵀ (DUᵀ)⁺``, ``α_r = 1 − Σ_{t≠r} α_t``.
    Every entry is an inner product, so with ``N_st = g_s·u_t = (GGᵀ)_st / ‖g_t‖``:
    ``(DUᵀ)_st = N_rr − N_rt − N_sr + N_st`` and ``(g_r Uᵀ)_t = N_rr − N_rt``. The reference's
    row and column are zero (so ``α_r`` comes from the constraint), and so are those of a zero
    gradient (no direction to balance: ``α_t = 0``). ``⁺`` is the pseudo-inverse, with singular
    values below ``1e-8 · max_t ‖g_t‖`` dropped: with collinear gradients (``DUᵀ`` singular,
    the balance undetermined) the ``α_{t≠r}`` are the minimum-norm balanced ones.
    """
    k = gram.shape[0]
    sq = gram.diagonal()
    norm = sq.sqrt()
    inv = norm / sq.clamp_min(torch.finfo(gram.dtype).tiny)  # 1/‖g_t‖, 0 for a zero gradient
    proj = gram * inv  # N_st = g_s·u_t
    ref = norm.argmax().view(1)
    keep = (norm > 0).to(gram.dtype).index_fill_(0, ref, 0.0)  # (K,)
    row = proj.index_select(0, ref)  # (1, K): N_rt
    col = proj.index_select(1, ref)  # (K, 1): N_sr
    corner = row.gather(1, ref.view(1, 1))  # N_rr (1, 1)
    rhs = (corner - row) * keep  # (1, K): g_r·(u_r − u_t)
    mat = (proj - row - col + corner) * (keep[:, None] * keep)  # DUᵀ with zero r, zero-g rows
    tol = norm.index_select(0, ref).view(()) * _SINGULAR
    alpha = (rhs @ torch.linalg.pinv(mat, atol=tol, rtol=0.0)).view(k)
    return alpha.index_add_(0, ref, 1 - alpha.sum().view(1))


@register_weighting("imtl")
class IMTL(GradientWeighting):
    """Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning",
    ICLR 2021.

    IMTL treats the tasks impartially in two complementary ways.

    - IMTL-L (loss balance): each task's loss is scaled as ``e^{s_t} L_t − s_t`` with a learnable
      ``s_t`` (initialised to 0). Its gradient ``e^{s_t} L_t − 1`` drives every scaled loss
      towards 1, so the scaled losses are comparable whatever the raw losses' magnitude.
    - IMTL-G (gradient balance): the shared update ``d = Σ_t α_t g_t`` with ``Σ_t α_t = 1`` is the
      one with equal projections ``d·u_t`` onto every unit gradient ``u_t = g_t / ‖g_t‖``: no
      task's direction is favoured. The paper's closed form (with ``D = [g_1 − g_2, …]``,
      ``U = [u_1 − u_2, …]``): ``α_{2:K} = g_1 Uᵀ (DUᵀ)⁻¹``, ``α_1 = 1 − Σ α_{2:K}``
      (:func:`imtl_g`).

    The paper's IMTL (``variant="hybrid"``, the default) uses both, as its Algorithm 1: the
    task gradients ``g_t`` are those of the scaled losses ``e^{s_t} L_t``, IMTL-G sets the
    direction of the shared update (``Σ α_t g_t``), and the loss scales set its magnitude (they
    enter ``g_t``). Task-specific parameters take the gradient of their own scaled loss, and
    ``s_t`` the gradient ``e^{s_t} L_t − 1``. Here the scaled losses (with ``e^{s_t}`` held
    constant) go through the usual per-task gradients, so ``G`` is already the scaled one and
    :meth:`combine` is IMTL-G alone; ``s_t``'s gradient is written by :meth:`backward` (scaled
    for AMP like every other gradient). Each ``s_t`` is its own scalar parameter (``log_scales``),
    so a task absent from a batch gets no gradient and is left alone by the optimizer.
    ``variant="g"`` is IMTL-G on the raw gradients; ``variant="l"`` is IMTL-L alone, a
    loss-weighting method that backpropagates ``Σ_t e^{s_t} L_t − s_t`` once (no per-task
    gradients; ``mode``, ``update_every`` and ``engine`` play no part).

    In the paper ``g_t`` is the gradient with respect to the shared representation ``z``
    (``features`` mode here); in ``parameters`` mode it is that of all shared parameters. With
    ``update_every > 1`` the reused ``α`` combine the current scaled gradients. The weight
    reported for task t is the factor its raw loss receives in the shared update,
    ``α_t e^{s_t}`` (``e^{s_t}`` for ``l``; ``α_t`` for ``g``).

    Args:
        tasks: names of all tasks, in order.
        variant: ``hybrid`` (IMTL, the paper's full method), ``g`` (IMTL-G) or ``l`` (IMTL-L).
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting`.
    """

    task_gradients = "raw"

    def __init__(
        self,
        tasks: Sequence[str],
        variant: Variant = "hybrid",
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r}; expected one of: {', '.join(VARIANTS)}")
        if log_losses and variant != "g":
            raise ValueError(
                f"log_losses with variant={variant!r}: log(e^s L) has the gradient of log L, so "
                "the learnt loss scales would do nothing; use variant=g (IMTL-G on log losses)"
            )
        self.variant: Variant = variant
        if variant == "l":
            self.needs = "losses"
        if variant != "g":
            self.log_scales = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in self.tasks)

    def wants_split(self) -> bool:
        """IMTL-L alone takes no per-task gradients."""
        return self.variant != "l" and super().wants_split()

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """IMTL-G's ``α`` (summing to 1) of the gradients in ``gram``."""
        return imtl_g(gram)

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """IMTL-G on the scaled losses' gradients (``hybrid``), or on the raw ones (``g``), or
        the scaled losses alone (``l``); the loss scales get ``e^{s_t} L_t − 1``."""
        if self.variant == "g":
            return super().backward(losses, ctx)
        order = self.present(losses)
        params = [self.log_scales[self.index(t)] for t in order]
        log_scale = torch.stack(list(params))  # (K,) in the graph of the s_t
        stacked = torch.stack([losses[t] for t in order])  # (K,)
        factor = log_scale.detach().to(stacked.dtype).exp()  # e^{s_t}
        if self.variant == "l":
            ctx.scale(scaled_loss(log_scale, stacked)).backward()
            return {t: factor[k] for k, t in enumerate(order)}
        scaled = factor * stacked
        alpha = super().backward({t: scaled[k] for k, t in enumerate(order)}, ctx)
        # ∂(e^{s_t} L_t − s_t)/∂s_t = e^{s_t} L_t − 1, with L_t held constant
        regulariser = (log_scale.exp() * stacked.detach().to(log_scale.dtype) - log_scale).sum()
        ctx.scale(regulariser).backward()
        return {t: alpha[t] * factor[k] for k, t in enumerate(order)}
