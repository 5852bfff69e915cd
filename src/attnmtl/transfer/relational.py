"""Feature and relational distillation losses: FitNets, TinyBERT, PKD, RKD, SP, PKT and DIST.

Axes: B batch, C channels, S spatial positions, T tokens, D features, H heads, K classes.

Each loss compares a student's tensor with a teacher's and returns a scalar; none detaches the
teacher (call it on ``teacher.detach()`` or compute the teacher under ``torch.no_grad()``).
The relational ones (RKD, SP, PKT) compare relations *between the samples of a batch*, so the
student's and the teacher's widths may differ; the others need equal shapes, after a learned
projection where the paper has one (:class:`HintRegressor`).

Papers, and the convention taken where a paper and its code differ:

* Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015 (:func:`hint_loss`,
  :class:`HintRegressor`).
* Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of
  EMNLP 2020 (:func:`attention_score_mse`; its hidden-state loss is :func:`hint_loss` with a
  linear :class:`HintRegressor`, the paper's ``W_h``).
* Sun et al., "Patient Knowledge Distillation for BERT Model Compression", EMNLP 2019
  (:func:`pkd_loss`).
* Park et al., "Relational Knowledge Distillation", CVPR 2019 (:func:`rkd_distance`,
  :func:`rkd_angle`).
* Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019
  (:func:`similarity_preserving`).
* Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
  ECCV 2018 (:func:`pkt_loss`).
* Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022
  (:func:`dist_loss`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(student: Tensor, teacher: Tensor, same_shape: bool = True) -> None:
    """ValueError unless both have a batch axis of the same size (and, if asked, one shape)."""
    if student.dim() < 2 or teacher.dim() < 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}; expected "
            "(B, ...) tensors with the same batch size"
        )
    if same_shape and student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}; expected equal "
            "shapes (project the student first: HintRegressor)"
        )


class HintRegressor(nn.Module):
    """FitNets' regressor ``r`` (TinyBERT's ``W_h``): the student's features mapped to the
    teacher's width — a 1×1 convolution over channels for (B, C, *S) maps, a linear layer over
    the last axis for (B, D) vectors and (B, T, D) token states (``channels_last``).

    Args:
        student_dim, teacher_dim: the two widths.
        spatial: 1 to 3 spatial axes of channel-first maps; 0 for channels-last inputs.
    """

    def __init__(self, student_dim: int, teacher_dim: int, spatial: int = 0) -> None:
        super().__init__()
        if student_dim < 1 or teacher_dim < 1 or spatial not in (0, 1, 2, 3):
            raise ValueError(
                f"student_dim={student_dim!r}, teacher_dim={teacher_dim!r}, spatial={spatial!r};"
                " expected widths >= 1 and 0 to 3 spatial axes"
            )
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
        self.spatial = spatial
        self.proj: nn.Module = (
            nn.Linear(student_dim, teacher_dim)
            if spatial == 0
            else conv[spatial](student_dim, teacher_dim, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def hint_loss(student: Tensor, teacher: Tensor, regressor: nn.Module | None = None) -> Tensor:
    """FitNets' hint loss ``½‖u_h − r(v_g)‖²`` as a mean over elements: the mean squared error
    between the teacher's hint and the (regressed) student's guided layer.

    The mean (not FitNets' ½ · sum) keeps the scale independent of the layer's size and is
    TinyBERT's hidden-state loss ``MSE(H_S W_h, H_T)`` exactly; multiply by half the element
    count for the paper's form.

    Args:
        student: the guided layer's output (any shape (B, ...)).
        teacher: the hint layer's output; the shape of ``regressor(student)``.
        regressor: FitNets' ``r`` (:class:`HintRegressor`); None when the widths already match.
    """
    projected = regressor(student) if regressor is not None else student
    _pair(projected, teacher)
    return F.mse_loss(projected, teacher)


def attention_score_mse(
    student_scores: Tensor, teacher_scores: Tensor, mask: Tensor | None = None
) -> Tensor:
    """TinyBERT's attention loss ``1/h Σ_i MSE(A_i^S, A_i^T)``: the mean squared error between
    the *unnormalised* attention scores ``QKᵀ/√d`` (before softmax) of each head, averaged over
    heads, queries and keys.

    With ``mask``, only real (query, key) pairs count (TinyBERT's code instead sets the masked
    scores, −10000 in both, to 0, which adds zero error but counts the pairs in the mean).

    Args:
        student_scores, teacher_scores: (B, H, Tq, Tk) with equal head counts (TinyBERT maps
            whole layers, head to head).
        mask: bool (B, Tk), True = real token; padded queries are left out too when Tq == Tk.
    """
    _pair(student_scores, teacher_scores)
    if student_scores.dim() != 4:
        raise ValueError(f"scores of shape {tuple(student_scores.shape)}; expected (B, H, Tq, Tk)")
    err = (student_scores - teacher_scores).pow(2)  # (B, H, Tq, Tk)
    if mask is None:
        return err.mean()
    b, h, tq, tk = err.shape
    if mask.dtype != torch.bool or tuple(mask.shape) != (b, tk):
        raise ValueError(
            f"mask has dtype {mask.dtype} and shape {tuple(mask.shape)}; expected torch.bool of "
            f"shape ({b}, {tk})"
        )
    keep = mask[:, None, None, :].expand(b, h, tq, tk)
    if tq == tk:
        keep = keep & mask[:, None, :, None]
    return err[keep].sum() / keep.sum().clamp_min(1)


def attention_scores(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """``Q_h K_hᵀ / √d_h`` per head from (B, T, D) queries and keys with the heads
    concatenated: (B, H, T, T)."""
    b, t, d = q.shape
    if d % heads:
        raise ValueError(f"queries of width {d} split into {heads} heads; expected a divisor")
    qh = q.reshape(b, t, heads, d // heads).transpose(1, 2)
    kh = k.reshape(b, k.shape[1], heads, d // heads).transpose(1, 2)
    return qh @ kh.transpose(-1, -2) / math.sqrt(d // heads)


def pkd_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """PKD's patient loss ``Σ_j ‖h_s/‖h_s‖₂ − h_t/‖h_t‖₂‖²₂`` for one pair of layers, as a mean
    over the batch (the paper sums over samples): the squared distance between the L2-normalised
    [CLS] states.

    Args:
        student, teacher: (B, D) pooled states, or (B, T, D) token states of which the first
            ([CLS]) is taken, as PKD does. Equal widths (PKD distils into a student of the
            teacher's width).
    """
    s = student[:, 0] if student.dim() == 3 else student
    t = teacher[:, 0] if teacher.dim() == 3 else teacher
    _pair(s, t)
    if s.dim() != 2:
        raise ValueError(f"student {tuple(student.shape)}; expected (B, D) or (B, T, D)")
    return (F.normalize(s, dim=1) - F.normalize(t, dim=1)).pow(2).sum(1).mean()


def sample_vectors(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """One vector per sample, (B, N): the tensor flattened after the batch axis; with a (B, T)
    padding mask over axis 1, padded steps are zeroed first (so padding never relates)."""
    if mask is not None and x.dim() >= 3 and tuple(mask.shape) == tuple(x.shape[:2]):
        x = x * mask.reshape(*mask.shape, *([1] * (x.dim() - 2))).to(x.dtype)
    return x.flatten(1)


def _distances(x: Tensor) -> Tensor:
    """Pairwise Euclidean distances (B, B), with a zero diagonal and a finite gradient there."""
    diff = x[:, None, :] - x[None, :, :]
    squared = diff.pow(2).sum(-1)
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    return torch.where(off, squared.clamp_min(1e-12).sqrt(), torch.zeros_like(squared))


def rkd_distance(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """RKD's distance-wise loss: Huber (δ = 1) between ``ψ_D(t_i, t_j) = ‖t_i − t_j‖₂ / μ`` of
    the teacher and of the student, ``μ`` the mean distance over the batch's pairs, averaged
    over the ordered pairs i ≠ j (the paper's χ²; the authors' code averages over all B² entries,
    the zero diagonal included — (B − 1)/B of this).

    Args:
        student, teacher: (B, ...) representations, any widths (flattened per sample,
            :func:`sample_vectors`); B >= 2.
        mask: an optional (B, T) padding mask of sequence records.
    """
    _pair(student, teacher, same_shape=False)
    if student.shape[0] < 2:
        raise ValueError(f"batch of {student.shape[0]}; RKD relates pairs of samples (B >= 2)")
    off = ~torch.eye(student.shape[0], dtype=torch.bool, device=student.device)
    psi = []
    for x in (student, teacher):
        d = _distances(sample_vectors(x, mask))[off]
        psi.append(d / d.mean().clamp_min(1e-12))
    return F.smooth_l1_loss(psi[0], psi[1])


def _angles(x: Tensor) -> Tensor:
    """``cos ∠x_i x_j x_k = ⟨e_ij, e_kj⟩``, ``e_ij = (x_i − x_j)/‖x_i − x_j‖``: (B, B, B) over
    (i, j, k)."""
    e = F.normalize(x[:, None, :] - x[None, :, :], dim=-1)  # (i, j, D): e_ij
    return torch.einsum("ijd,kjd->ijk", e, e)


def rkd_angle(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """RKD's angle-wise loss: Huber (δ = 1) between the cosines of the angle each triplet makes
    at its middle sample, ``ψ_A = cos ∠t_i t_j t_k``, of the teacher and of the student, over the
    triplets of distinct samples (the paper's χ³; the authors' code averages over all B³,
    degenerate ones included).

    Args:
        student, teacher: (B, ...) representations, any widths; B >= 3.
        mask: an optional (B, T) padding mask of sequence records.
    """
    _pair(student, teacher, same_shape=False)
    b = student.shape[0]
    if b < 3:
        raise ValueError(f"batch of {b}; RKD's angles relate triplets of samples (B >= 3)")
    idx = torch.arange(b, device=student.device)
    distinct = (
        (idx[:, None, None] != idx[None, :, None])
        & (idx[None, :, None] != idx[None, None, :])
        & (idx[:, None, None] != idx[None, None, :])
    )
    s = _angles(sample_vectors(student, mask))[distinct]
    t = _angles(sample_vectors(teacher, mask))[distinct]
    return F.smooth_l1_loss(s, t)


def similarity_preserving(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Similarity-preserving KD: ``1/B² ‖G̃_T − G̃_S‖²_F`` with ``G = QQᵀ`` the B × B Gram of
    the flattened activations and ``G̃`` its rows L2-normalised.

    Args:
        student, teacher: (B, ...) activations, any shapes (flattened per sample).
        mask: an optional (B, T) padding mask of sequence records.
    """
    _pair(student, teacher, same_shape=False)
    grams = []
    for x in (student, teacher):
        q = sample_vectors(x, mask)
        grams.append(F.normalize(q @ q.T, dim=1))
    return (grams[1] - grams[0]).pow(2).sum() / student.shape[0] ** 2


def _conditional(x: Tensor, eps: float) -> Tensor:
    """PKT's ``p_{j|i}``: the cosine kernel ``(cos(x_i, x_j) + 1)/2`` normalised over j ≠ i."""
    v = F.normalize(x, dim=1, eps=eps)
    kernel = (v @ v.T + 1) / 2
    kernel = kernel * (1 - torch.eye(len(x), dtype=x.dtype, device=x.device))
    return kernel / kernel.sum(1, keepdim=True).clamp_min(eps)


def pkt_loss(
    student: Tensor, teacher: Tensor, mask: Tensor | None = None, eps: float = 1e-7
) -> Tensor:
    """Probabilistic knowledge transfer: the KL divergence between the teacher's and the
    student's conditional distributions over the batch, ``p_{j|i} = K(x_i, x_j) / Σ_{k≠i}
    K(x_i, x_k)`` with the cosine kernel ``K = (cos + 1)/2``, averaged over the anchors i:
    ``1/B Σ_i Σ_{j≠i} p_{j|i} log(p_{j|i} / q_{j|i})``. (The authors' code keeps ``j = i`` in
    each distribution and averages over all B² terms.)

    Args:
        student, teacher: (B, ...) representations, any widths; B >= 2.
        mask: an optional (B, T) padding mask of sequence records.
        eps: floor inside the normalisations and logs.
    """
    _pair(student, teacher, same_shape=False)
    if student.shape[0] < 2:
        raise ValueError(f"batch of {student.shape[0]}; PKT relates pairs of samples (B >= 2)")
    q = _conditional(sample_vectors(student, mask), eps)
    p = _conditional(sample_vectors(teacher, mask), eps)
    kl = p * (p.clamp_min(eps).log() - q.clamp_min(eps).log())
    return kl.sum(1).mean()


def _pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of the rows of a and b: (N,)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> Tensor:
    """DIST: match the *relations* of the class probabilities ``Y = softmax(Z/τ)`` rather than
    their values — inter-class, ``1/B Σ_i (1 − ρ(Y^s_i, Y^t_i))`` (each sample's distribution
    over classes), and intra-class, ``1/K Σ_j (1 − ρ(Y^s_{:,j}, Y^t_{:,j}))`` (each class's
    probabilities across the batch), ρ the Pearson correlation:
    ``L = τ² (β L_inter + γ L_intra)``; β = γ = τ = 1 by default, as the paper's ImageNet
    setting.

    Args:
        student_logits, teacher_logits: (B, K) multi-class logits.
        temperature: τ > 0.
        beta, gamma: the weights of the two terms, >= 0.
    """
    _pair(student_logits, teacher_logits)
    if student_logits.dim() != 2:
        raise ValueError(f"logits of shape {tuple(student_logits.shape)}; expected (B, K)")
    if not temperature > 0 or beta < 0 or gamma < 0:
        raise ValueError(
            f"temperature={temperature!r}, beta={beta!r}, gamma={gamma!r}; expected τ > 0 and "
            "weights >= 0"
        )
    ys = (student_logits / temperature).softmax(1)
    yt = (teacher_logits / temperature).softmax(1)
    inter = (1 - _pearson(ys, yt)).mean()
    intra = (1 - _pearson(ys.T, yt.T)).mean()
    return temperature**2 * (beta * inter + gamma * intra)
