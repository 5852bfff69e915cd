"""Pair losses by name: what a ``transfer.pairs`` entry's ``loss`` compares and how.

A pair loss reads one kind of capture record (:mod:`attnmtl.transfer.capture`: ``activation``,
``attention`` or ``qkv``) from the teacher and the student at their module paths and returns a
scalar. ``@register_pair_loss(name, capture)`` adds one; the run layer looks a pair's loss up
here, never by an if/elif on its name. Each is called as ``loss(teacher, student, mask,
options)``: the two records, the (B, T) key-padding mask of the batch (True = real step, or
None) and the pair's options (an object with the attributes each loss reads, e.g. the config's
``TransferPair``).

Logit losses (``transfer.logits.loss``) have their own registry, :data:`LOGIT_LOSSES`
(``@register_logit_loss``): Hinton's ``kd`` and DIST's ``dist``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attnmtl.core.registry import Registry
from attnmtl.transfer.capture import QKV
from attnmtl.transfer.losses import (
    activation_transfer_loss,
    attention_kl,
    logit_distillation,
    relation_kl,
    value_relation_kl,
)
from attnmtl.transfer.relational import (
    attention_score_mse,
    attention_scores,
    dist_loss,
    pkd_loss,
    pkt_loss,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
)

PairLoss = Callable[[Any, Any, Tensor | None, Any], Tensor]
PAIR_LOSSES: Registry[PairLoss] = Registry("transfer loss")
CAPTURE_KIND: dict[str, str] = {}  # pair loss → the capture kind it reads


def register_pair_loss(name: str, capture: str) -> Callable[[PairLoss], PairLoss]:
    """Register a pair loss under ``name``, reading records of kind ``capture``."""

    def decorator(loss: PairLoss) -> PairLoss:
        CAPTURE_KIND[name] = capture
        return PAIR_LOSSES.register(name)(loss)

    return decorator


def _keys(mask: Tensor | None, steps: int) -> Tensor | None:
    """The padding mask when it spans the records' key axis (else the records are unpadded)."""
    return mask if mask is not None and mask.shape[-1] == steps else None


@register_pair_loss("activation", "activation")
def activation_pair(teacher: Tensor, student: Tensor, mask: Tensor | None, options: Any) -> Tensor:
    """Zagoruyko & Komodakis' attention maps of activations (``p``, ``convention``,
    ``resize``, ``channels_last``)."""
    return activation_transfer_loss(
        student, teacher, options.p, options.convention, options.resize, options.channels_last
    )


@register_pair_loss("attention_kl", "attention")
def attention_pair(teacher: Tensor, student: Tensor, mask: Tensor | None, options: Any) -> Tensor:
    """MiniLM's KL between attention rows (``heads``: ``match`` or ``mean``)."""
    return attention_kl(teacher, student, _keys(mask, student.shape[-1]), options.heads)


@register_pair_loss("value_relation", "qkv")
def value_relation_pair(teacher: QKV, student: QKV, mask: Tensor | None, options: Any) -> Tensor:
    """MiniLM's value relation."""
    keys = _keys(mask, student.q.shape[1])
    return value_relation_kl(teacher.v, student.v, teacher.num_heads, student.num_heads, keys)


@register_pair_loss("relation", "qkv")
def relation_pair(teacher: QKV, student: QKV, mask: Tensor | None, options: Any) -> Tensor:
    """MiniLMv2's Q-Q, K-K and V-V relations (``relations``) over ``relation_heads`` heads
    (the student's head count by default), averaged."""
    keys = _keys(mask, student.q.shape[1])
    heads = options.relation_heads or student.num_heads
    terms = [
        relation_kl(getattr(teacher, r), getattr(student, r), heads, keys)
        for r in options.relations
    ]
    return torch.stack(terms).mean()


@register_pair_loss("tinybert_attention", "qkv")
def tinybert_attention_pair(
    teacher: QKV, student: QKV, mask: Tensor | None, options: Any
) -> Tensor:
    """TinyBERT's MSE between the attention scores before softmax, head to head (equal head
    counts)."""
    if teacher.num_heads != student.num_heads:
        raise ValueError(
            f"tinybert_attention: teacher has {teacher.num_heads} heads and student "
            f"{student.num_heads}; TinyBERT maps head to head (use relation for other counts)"
        )
    keys = _keys(mask, student.q.shape[1])
    s = attention_scores(student.q, student.k, student.num_heads)
    t = attention_scores(teacher.q, teacher.k, teacher.num_heads)
    return attention_score_mse(s, t, keys)


@register_pair_loss("pkd", "activation")
def pkd_pair(teacher: Tensor, student: Tensor, mask: Tensor | None, options: Any) -> Tensor:
    """PKD's distance between the normalised [CLS] (first-step) states."""
    return pkd_loss(student, teacher)


@register_pair_loss("rkd_distance", "activation")
def rkd_distance_pair(
    teacher: Tensor, student: Tensor, mask: Tensor | None, options: Any
) -> Tensor:
    """RKD's distance-wise relations between the batch's samples."""
    return rkd_distance(student, teacher, mask)


@register_pair_loss("rkd_angle", "activation")
def rkd_angle_pair(teacher: Tensor, student: Tensor, mask: Tensor | None, options: Any) -> Tensor:
    """RKD's angle-wise relations between the batch's samples."""
    return rkd_angle(student, teacher, mask)


@register_pair_loss("similarity", "activation")
def similarity_pair(teacher: Tensor, student: Tensor, mask: Tensor | None, options: Any) -> Tensor:
    """Tung & Mori's similarity-preserving loss on the batch's Gram matrices."""
    return similarity_preserving(student, teacher, mask)


@register_pair_loss("pkt", "activation")
def pkt_pair(teacher: Tensor, student: Tensor, mask: Tensor | None, options: Any) -> Tensor:
    """Passalis & Tefas' probabilistic knowledge transfer."""
    return pkt_loss(student, teacher, mask)


LogitLoss = Callable[[Tensor, Tensor, str, Any], Tensor]
LOGIT_LOSSES: Registry[LogitLoss] = Registry("logit loss")
register_logit_loss = LOGIT_LOSSES.register
"""``@register_logit_loss(name)``: a loss of a task's outputs, called as ``loss(student,
teacher, kind, options)`` with the task kind and the ``transfer.logits`` options (an object
with ``temperature``, ``beta``, ``gamma``, e.g. the config's ``LogitTransfer``)."""


@register_logit_loss("kd")
def kd_logits(student: Tensor, teacher: Tensor, kind: str, options: Any) -> Tensor:
    """Hinton et al.'s soft targets at ``temperature`` (MSE for regression)."""
    return logit_distillation(student, teacher, kind, options.temperature)


@register_logit_loss("dist")
def dist_logits(student: Tensor, teacher: Tensor, kind: str, options: Any) -> Tensor:
    """DIST's inter- and intra-class relations (``temperature``, ``beta``, ``gamma``);
    multi-class tasks only."""
    if kind != "multiclass":
        raise ValueError(
            f"transfer.logits.loss=dist relates class probabilities; a {kind} task has none "
            "(use loss=kd for it)"
        )
    return dist_loss(student, teacher, options.temperature, options.beta, options.gamma)
