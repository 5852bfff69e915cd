"""From attention scores to attention weights: softmax and three hard selections.

Axes: scores (..., Tk); ``mask`` broadcastable to scores, True = the key takes part.

Conventions shared by every function here (and so by every attention module):

* a masked key gets exactly zero weight;
* an unmasked row sums to one;
* a row whose every key is masked gets all-zero weights (so the attended output is zero),
  never NaN, in the forward and in the backward pass.

Hard selections (x-transformers picks them the same way, once, in ``__init__``):

* ``topk``: softmax over the k highest-scoring keys, the rest exactly zero;
* ``gumbel``: Gumbel-softmax with the straight-through estimator (Jang, Gu & Poole, ICLR 2017):
  one-hot forward, the relaxed sample's gradient backward; deterministic argmax in evaluation;
* ``argmax``: one-hot of the best key forward, the softmax's gradient backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import torch
from torch import Tensor

SELECTIONS = ("softmax", "topk", "gumbel", "argmax")


def masked_softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax over the last axis with masked keys at exactly zero weight."""
    if mask is None:
        return scores.softmax(-1)
    # finfo.min (not -inf) keeps an all-masked row finite; the second fill zeroes it.
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return filled.softmax(-1).masked_fill(~mask, 0.0)


def topk_softmax(scores: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """Softmax over the ``k`` highest-scoring unmasked keys; every other key gets zero."""
    if k >= scores.shape[-1]:
        return masked_softmax(scores, mask)
    ranked = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
    index = ranked.topk(k, dim=-1).indices
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, index, True)
    if mask is not None:
        keep = keep & mask  # rows with fewer than k real keys keep only the real ones
    return masked_softmax(scores, keep)


def _straight_through(soft: Tensor, mask: Tensor | None) -> Tensor:
    """One-hot of ``soft``'s argmax in the forward pass, ``soft``'s gradient in the backward."""
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    if mask is not None:
        hard = hard.masked_fill(~mask, 0.0)  # an all-masked row stays all zero
    return hard - soft.detach() + soft


def argmax_st(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Argmax one-hot with the softmax's straight-through gradient."""
    return _straight_through(masked_softmax(scores, mask), mask)


def gumbel_softmax_st(
    scores: Tensor, tau: float = 1.0, mask: Tensor | None = None, training: bool = True
) -> Tensor:
    """Straight-through Gumbel-softmax sample in training; deterministic argmax otherwise."""
    if not training:
        return argmax_st(scores, mask)
    uniform = torch.rand_like(scores).clamp_(min=1e-20, max=1.0 - 1e-7)
    gumbel = -torch.log(-torch.log(uniform))
    return _straight_through(masked_softmax((scores + gumbel) / tau, mask), mask)


@dataclass(frozen=True)
class Selection:
    """A validated choice of how scores become weights, applied as ``select(scores, mask)``.

    Args:
        kind: one of ``softmax``, ``topk``, ``gumbel``, ``argmax``.
        top_k: number of keys kept by ``topk`` (required for it, rejected otherwise).
        tau: Gumbel-softmax temperature, > 0.
    """

    kind: str = "softmax"
    top_k: int | None = None
    tau: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SELECTIONS:
            raise ValueError(f"selection={self.kind!r}; expected one of: {', '.join(SELECTIONS)}")
        if self.kind == "topk":
            top_k = self.top_k
            if not isinstance(top_k, Integral) or isinstance(top_k, bool) or top_k < 1:
                raise ValueError(f"top_k={self.top_k!r}; selection='topk' needs an integer >= 1")
        elif self.top_k is not None:
            raise ValueError(f"top_k={self.top_k!r} is only used with selection='topk'")
        if not self.tau > 0:
            raise ValueError(f"tau={self.tau!r}; expected a temperature > 0")

    @property
    def is_softmax(self) -> bool:
        """True for plain softmax, the only selection the fused kernel computes."""
        return self.kind == "softmax"

    def __call__(
        self, scores: Tensor, mask: Tensor | None = None, training: bool = False
    ) -> Tensor:
        if self.kind == "softmax":
            return masked_softmax(scores, mask)
        if self.kind == "topk":
            assert self.top_k is not None
            return topk_softmax(scores, self.top_k, mask)
        if self.kind == "gumbel":
            return gumbel_softmax_st(scores, self.tau, mask, training)
        return argmax_st(scores, mask)
