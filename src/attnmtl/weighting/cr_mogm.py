"""CR-MOGM: the weights of any Gram-matrix method, smoothed by an exponential moving average.

Axes: K tasks present in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode
from attnmtl.weighting.registry import WEIGHTINGS, create_weighting, register_weighting

# Options of the wrapped method that belong to the wrapper (it takes the gradients).
_WRAPPER_OPTIONS = ("mode", "update_every", "engine", "log_losses")


def smoothable() -> list[str]:
    """The registered methods CR-MOGM can wrap: Gram-matrix methods that combine the raw task
    gradients and learn nothing themselves."""
    names = []
    for name in WEIGHTINGS.names():
        cls = WEIGHTINGS.get(name)
        if (
            issubclass(cls, GradientWeighting)
            and cls is not CRMOGM
            and name != "mgda_ub"  # (mgda in features mode: set mode on cr_mogm)
            and cls.task_gradients == "raw"
            and not any(True for _ in cls(["a", "b"]).parameters())
        ):
            names.append(name)
    return names


@register_weighting("cr_mogm")
class CRMOGM(GradientWeighting):
    """Zhou, Zhang, Xu, Yu & Wang, "On the Convergence of Stochastic Multi-Objective Gradient
    Manipulation and Beyond", NeurIPS 2022.

    Stochastic multi-objective gradient methods (MGDA, PCGrad, CAGrad, ...) compute their
    weights from one mini-batch, and the noise in those weights biases the update; the paper
    shows they need not converge, and that smoothing the weights across steps restores
    convergence (correlation-reduced MOGM): ``λ_t = α λ_{t−1} + (1 − α) λ̂_t``, with ``λ̂_t``
    the wrapped method's weights at step t and ``λ_0 = λ̂_1`` (torchjd's ``CRMOGMWeighting``).
    The update is ``d = Σ_k λ_{t,k} g_k``. A task absent from a batch keeps its smoothed
    weight; one seen for the first time starts from its own ``λ̂``.

    Args:
        tasks: names of all tasks, in order.
        method: the wrapped method, a registered Gram-matrix method combining the raw
            gradients (``mgda``, ``pcgrad``, ``cagrad``, ``upgrad``, ...).
        alpha: ``α`` in [0, 1) (0: no smoothing); 0.9 as torchjd's default.
        options: the wrapped method's own hyperparameters (``{c: 0.4}`` for CAGrad).
        mode, update_every, engine, log_losses: see
            :class:`~attnmtl.weighting.gradient.GradientWeighting` (the wrapper's, not the
            wrapped method's).
    """

    smoothed: Tensor
    seen: Tensor
    inner: GradientWeighting

    def __init__(
        self,
        tasks: Sequence[str],
        method: str = "mgda",
        alpha: float = 0.9,
        options: Mapping[str, Any] | None = None,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(
            tasks, mode=mode, update_every=update_every, engine=engine, log_losses=log_losses
        )
        choices = smoothable()
        if method not in choices:
            raise ValueError(f"method={method!r}; expected one of: {', '.join(choices)}")
        if isinstance(alpha, bool) or not (0.0 <= float(alpha) < 1.0):
            raise ValueError(f"alpha={alpha!r}; expected a number in [0, 1)")
        options = dict(options or {})
        clash = [k for k in options if k in _WRAPPER_OPTIONS]
        if clash:
            raise ValueError(
                f"options {clash}: set {', '.join(clash)} on cr_mogm itself, which takes "
                "the gradients for the wrapped method"
            )
        self.method = method
        self.alpha = float(alpha)
        inner = create_weighting(method, self.tasks, **options)
        assert isinstance(inner, GradientWeighting)
        self.inner = inner
        self.register_buffer("smoothed", torch.zeros(len(self.tasks)))
        self.register_buffer("seen", torch.zeros(len(self.tasks), dtype=torch.bool))

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """``λ = α λ_prev + (1 − α) λ̂`` over the present tasks."""
        self.inner.job = self.job  # (PCGrad's random orders agree across processes)
        fresh = self.inner.combine(gram, losses, index)
        idx = torch.tensor(index, device=self.smoothed.device)
        previous = self.smoothed[idx].to(fresh.dtype)
        seen = self.seen[idx]
        mixed = torch.where(seen, self.alpha * previous + (1 - self.alpha) * fresh, fresh)
        self.smoothed[idx] = mixed.to(self.smoothed.dtype)
        self.seen[idx] = True
        return mixed
