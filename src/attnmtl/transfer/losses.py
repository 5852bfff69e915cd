"""Attention-transfer and distillation losses: AT maps, MiniLM attention/relation KL, Hinton KD.

Axes: B batch, C channels, S spatial positions (H×W or T), H heads, Tq queries, Tk keys,
T tokens, D features, R relation heads.

None of these losses detaches the teacher: call them on ``teacher_output.detach()`` (or compute
the teacher under ``torch.no_grad()``) so that the gradient reaches the student only.

Papers:

* Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
  Convolutional Neural Networks via Attention Transfer", ICLR 2017 (``attention_map``,
  ``activation_transfer_loss``).
* Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
  Pre-Trained Transformers", NeurIPS 2020 (``attention_kl``, ``value_relation_kl``).
* Wang et al., "MiniLMv2: Multi-Head Self-Attention Relation Distillation for Compressing
  Pretrained Transformers", Findings of ACL 2021 (``relation_kl``).
* Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015
  (``logit_distillation``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnmtl.attention.selection import masked_softmax
from attnmtl.core.tasks import TASK_KINDS

AT_CONVENTIONS = ("official", "paper")
AT_RESIZES = ("interpolate", "pool")
HEAD_MODES = ("match", "mean")
_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _channels_first(activation: Tensor, channels_last: bool) -> Tensor:
    """(B, *S, C) -> (B, C, *S) when ``channels_last``; check the rank is at least 3."""
    if activation.dim() < 3:
        raise ValueError(
            f"activation of shape {tuple(activation.shape)}; expected (B, C, *S) with at "
            "least one spatial axis, or (B, *S, C) with channels_last=True"
        )
    return activation.movedim(-1, 1) if channels_last else activation


def attention_map(activation: Tensor, p: float = 2.0, channels_last: bool = False) -> Tensor:
    """Activation-based attention map ``Q = vec(Σ_c |A_c|^p)``, L2-normalised per sample.

    The channel mean (as the official code takes) and sum give the same map once normalised.

    Args:
        activation: (B, C, *S), e.g. (B, C, H, W) or (B, C, T); (B, *S, C) with ``channels_last``
            (e.g. a sequence (B, T, D)).
        p: exponent applied to the absolute activations (the paper's default is 2).
        channels_last: the channel axis is the last one.

    Returns:
        (B, prod(S)) maps of unit L2 norm.
    """
    x = _channels_first(activation, channels_last)  # (B, C, *S)
    q = x.abs().pow(p).mean(1).flatten(1)  # (B, prod(S))
    return F.normalize(q, dim=1)


def _match_sizes(student: Tensor, teacher: Tensor, resize: str) -> tuple[Tensor, Tensor]:
    """Bring two (B, C, *S) activations to the same spatial size."""
    s_size, t_size = tuple(student.shape[2:]), tuple(teacher.shape[2:])
    if s_size == t_size:
        return student, teacher
    if resize == "interpolate":
        mode = _INTERPOLATION[len(t_size)]
        return F.interpolate(student, size=t_size, mode=mode, align_corners=False), teacher
    # "pool": average-pool each axis down to the smaller of the two sizes.
    target = [min(a, b) for a, b in zip(s_size, t_size, strict=True)]
    return _adaptive_pool(student, target), _adaptive_pool(teacher, target)


def _adaptive_pool(x: Tensor, size: list[int]) -> Tensor:
    """Adaptive average pooling of (B, C, *S) to ``size`` (1 to 3 spatial axes)."""
    if len(size) == 1:
        return F.adaptive_avg_pool1d(x, size[0])
    if len(size) == 2:
        return F.adaptive_avg_pool2d(x, (size[0], size[1]))
    return F.adaptive_avg_pool3d(x, (size[0], size[1], size[2]))


def activation_transfer_loss(
    student: Tensor,
    teacher: Tensor,
    p: float = 2.0,
    convention: str = "official",
    resize: str = "interpolate",
    channels_last: bool = False,
    beta: float = 1.0,
) -> Tensor:
    """Attention transfer (AT) between a student and a teacher activation.

    * ``official`` (``at_loss`` of github.com/szagoruyko/attention-transfer):
      ``beta · mean_{b,s} (Q_s − Q_t)²`` of the normalised maps. The official CIFAR script
      multiplies the sum of this over layer pairs by β = 1000, so pass ``beta=1000`` (or
      multiply outside) to reproduce it; with the default ``beta=1`` the value is ~1e-3 scale.
    * ``paper`` (eq. 2): ``beta/2 · mean_b ‖Q_s − Q_t‖₂`` — the L2 distance, not squared. The
      paper sets β to 1000 divided by the map size and the batch size, for each layer.

    The two differ by orders of magnitude: β must follow the convention.

    Channel counts may differ. When the spatial sizes differ, ``interpolate`` resizes the
    student's activation to the teacher's size ((bi/tri)linear, ``align_corners=False``) before
    the map is taken; ``pool`` adaptive-average-pools each axis down to the smaller size.

    Args:
        student, teacher: (B, C, *S) activations ((B, *S, C) with ``channels_last``).
        p: exponent of :func:`attention_map`.
        convention: ``official`` or ``paper``.
        resize: ``interpolate`` or ``pool``.
        channels_last: channels are the last axis (sequences (B, T, D)).
        beta: weight β (see above).

    Returns:
        A scalar loss.
    """
    if convention not in AT_CONVENTIONS:
        raise ValueError(f"convention={convention!r}; expected one of: {', '.join(AT_CONVENTIONS)}")
    if resize not in AT_RESIZES:
        raise ValueError(f"resize={resize!r}; expected one of: {', '.join(AT_RESIZES)}")
    if student.dim() != teacher.dim() or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}; expected the "
            "same rank and batch size"
        )
    s = _channels_first(student, channels_last)  # (B, Cs, *Ss)
    t = _channels_first(teacher, channels_last)  # (B, Ct, *St)
    if s.dim() - 2 not in _INTERPOLATION:
        raise ValueError(f"student {tuple(student.shape)}; expected 1 to 3 spatial axes")
    s, t = _match_sizes(s, t, resize)
    diff = attention_map(s, p) - attention_map(t, p)  # (B, prod(S))
    if convention == "official":
        return beta * diff.pow(2).mean()
    return beta / 2 * torch.linalg.vector_norm(diff, dim=1).mean()


def _as_4d(weights: Tensor, name: str) -> Tensor:
    """(B, Tk), (B, Tq, Tk) or (B, H, Tq, Tk) -> (B, H, Tq, Tk)."""
    if weights.dim() == 2:
        return weights[:, None, None, :]
    if weights.dim() == 3:
        return weights[:, None]
    if weights.dim() == 4:
        return weights
    raise ValueError(
        f"{name} of shape {tuple(weights.shape)}; expected (B, Tk), (B, Tq, Tk) or (B, H, Tq, Tk)"
    )


def attention_kl(
    teacher: Tensor,
    student: Tensor,
    mask: Tensor | None = None,
    heads: str = "match",
    eps: float = 1e-12,
) -> Tensor:
    """MiniLM attention distillation: mean over heads and real rows of ``KL(A_t ‖ A_s)``.

    ``L = 1/(A_h |x|) Σ_heads Σ_rows KL(A_t ‖ A_s)``, each row a distribution over keys; the
    average is taken over every (head, real query row) of the batch at once (with equal
    lengths, the batch mean of MiniLM's per-sample loss).

    Both inputs are weights (probabilities), not logits: the student's log is taken of its
    clamped weights (``clamp_min(eps)``), so ``0 · log 0 = 0`` and zero weights give no NaN.

    Args:
        teacher, student: attention weights, keys last: (B, Tk) (one row per sample, e.g.
            attention pooling), (B, Tq, Tk) or (B, H, Tq, Tk).
        mask: bool (B, Tk), True = real token. Padded keys are left out of each row's KL sum;
            when Tq == Tk (self-attention) padded query rows are left out of the average too.
        heads: ``match`` (equal head counts, head h against head h) or ``mean`` (each side's
            heads averaged into one distribution first).
        eps: floor of the probabilities inside the logs.

    Returns:
        A scalar loss.
    """
    if heads not in HEAD_MODES:
        raise ValueError(f"heads={heads!r}; expected one of: {', '.join(HEAD_MODES)}")
    t, s = _as_4d(teacher, "teacher"), _as_4d(student, "student")  # (B, H, Tq, Tk)
    if heads == "mean":
        t, s = t.mean(1, keepdim=True), s.mean(1, keepdim=True)  # (B, 1, Tq, Tk)
    elif t.shape[1] != s.shape[1]:
        raise ValueError(
            f"teacher has {t.shape[1]} heads and student {s.shape[1]}; heads='match' needs "
            "equal counts: use heads='mean' or relation_kl"
        )
    b, _, tq, tk = s.shape
    if (t.shape[0], t.shape[2], t.shape[3]) != (b, tq, tk):
        raise ValueError(
            f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)}; expected the "
            "same batch, query and key sizes"
        )
    kl = t * (t.clamp_min(eps).log() - s.clamp_min(eps).log())  # (B, H, Tq, Tk)
    rows = torch.ones(b, tq, dtype=kl.dtype, device=kl.device)  # (B, Tq)
    if mask is not None:
        if mask.dtype != torch.bool or tuple(mask.shape) != (b, tk):
            raise ValueError(
                f"mask has dtype {mask.dtype} and shape {tuple(mask.shape)}; expected torch.bool "
                f"of shape ({b}, {tk}) with True = real token"
            )
        kl = kl.masked_fill(~mask[:, None, None, :], 0.0)
        if tq == tk and teacher.dim() > 2 and student.dim() > 2:
            rows = mask.to(kl.dtype)
    row_kl = kl.sum(-1) * rows[:, None, :]  # (B, H, Tq)
    count = rows.sum() * kl.shape[1]
    return row_kl.sum() / count.clamp_min(1.0)


def _relations(x: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    """Self-relations softmax(A_h A_hᵀ / √d) per head of (B, T, D) -> (B, heads, T, T)."""
    b, t, d = x.shape
    a = x.reshape(b, t, heads, d // heads).transpose(1, 2)  # (B, R, T, d)
    scores = a @ a.transpose(-1, -2) / math.sqrt(d // heads)  # (B, R, T, T)
    key_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, T)
    return masked_softmax(scores, key_mask)


def _check_split(x: Tensor, heads: int, name: str) -> None:
    """Raise unless ``x`` is (B, T, D) with D divisible by ``heads``."""
    if heads < 1 or x.dim() != 3 or x.shape[-1] % heads != 0:
        raise ValueError(
            f"{name} of shape {tuple(x.shape)} split into {heads!r} heads; expected (B, T, D) "
            "with D divisible by a head count >= 1"
        )


def relation_kl(
    teacher: Tensor, student: Tensor, relation_heads: int, mask: Tensor | None = None
) -> Tensor:
    """MiniLMv2 self-attention relation distillation (one relation: Q-Q, K-K or V-V).

    Each input (queries, keys or values with heads concatenated) is re-split into
    ``relation_heads`` heads, ``R = softmax(A_r A_rᵀ / √d_r)`` (masked keys excluded), and
    ``KL(R_t ‖ R_s)`` is averaged as in :func:`attention_kl`. Teacher and student may have
    any widths and head counts: only ``relation_heads`` must divide both widths.

    Args:
        teacher: (B, T, Dt).
        student: (B, T, Ds).
        relation_heads: number R of relation heads.
        mask: bool (B, T), True = real token.

    Returns:
        A scalar loss.
    """
    _check_split(teacher, relation_heads, "teacher")
    _check_split(student, relation_heads, "student")
    if teacher.shape[:2] != student.shape[:2]:
        raise ValueError(
            f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)}; expected the "
            "same (B, T)"
        )
    r_t = _relations(teacher, relation_heads, mask)  # (B, R, T, T)
    r_s = _relations(student, relation_heads, mask)  # (B, R, T, T)
    return attention_kl(r_t, r_s, mask)


def value_relation_kl(
    teacher_values: Tensor,
    student_values: Tensor,
    teacher_heads: int,
    student_heads: int,
    mask: Tensor | None = None,
) -> Tensor:
    """MiniLM value-relation distillation: ``KL(VR_t ‖ VR_s)``, ``VR = softmax(V_h V_hᵀ/√d_k)``.

    Values are (B, T, D) with the heads concatenated, as the value projection outputs them. As
    in MiniLM, head counts must match (MiniLMv2's :func:`relation_kl` lifts that).

    Args:
        teacher_values: (B, T, Dt).
        student_values: (B, T, Ds).
        teacher_heads, student_heads: the models' attention head counts.
        mask: bool (B, T), True = real token.

    Returns:
        A scalar loss.
    """
    if teacher_heads != student_heads:
        raise ValueError(
            f"teacher_heads={teacher_heads!r}, student_heads={student_heads!r}; MiniLM's value "
            "relation needs equal head counts: use relation_kl for different counts"
        )
    return relation_kl(teacher_values, student_values, teacher_heads, mask)


def logit_distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    kind: str,
    temperature: float = 4.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Knowledge distillation of a task's outputs (Hinton, Vinyals & Dean, 2015).

    * ``multiclass`` (B, C): ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, mean over the batch.
    * ``binary`` (B, 1) / ``multilabel`` (B, C): ``T² ·`` the KL between Bernoulli
      distributions ``sigmoid(t/T)`` and ``sigmoid(s/T)`` (BCE-with-logits against the
      teacher's probabilities minus the teacher's entropy, so 0 when equal), mean over elements.
    * ``regression``: mean squared error between the outputs; ``temperature`` is unused.

    The T² factor keeps the soft-target gradients' scale independent of T.

    Args:
        student_logits, teacher_logits: the task's predictions, same shape (B, ...).
        kind: the task kind (see :mod:`attnmtl.core.tasks`).
        temperature: softening temperature T > 0.
        mask: bool (B,), True = the sample takes part; no sample gives a zero loss.

    Returns:
        A scalar loss.
    """
    if kind not in TASK_KINDS:
        raise ValueError(f"kind={kind!r}; expected one of: {', '.join(TASK_KINDS)}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}; expected > 0")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() < 1:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}; "
            "expected equal shapes (B, ...)"
        )
    if kind == "multiclass" and student_logits.dim() != 2:
        raise ValueError(f"logits of shape {tuple(student_logits.shape)}; multiclass needs (B, C)")
    s, t = student_logits, teacher_logits
    if mask is not None:
        if mask.dtype != torch.bool or tuple(mask.shape) != (s.shape[0],):
            raise ValueError(
                f"mask has dtype {mask.dtype} and shape {tuple(mask.shape)}; expected "
                f"torch.bool of shape ({s.shape[0]},)"
            )
        s, t = s[mask], t[mask]
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    if kind == "regression":
        return F.mse_loss(s, t)
    s, t = s / temperature, t / temperature
    if kind == "multiclass":
        kl = F.kl_div(s.log_softmax(-1), t.log_softmax(-1), reduction="batchmean", log_target=True)
    else:
        p_t = t.sigmoid()
        cross = F.binary_cross_entropy_with_logits(s, p_t, reduction="none")
        entropy = F.binary_cross_entropy_with_logits(t, p_t, reduction="none")
        kl = (cross - entropy).mean()
    return temperature**2 * kl
