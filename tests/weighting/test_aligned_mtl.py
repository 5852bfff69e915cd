"""Aligned-MTL (Senushkin et al., CVPR 2023): Ĝ = BG with B = σ V Λ^{-1/2} Vᵀ, d = wᵀĜ = (Bw)ᵀG.

Checked against the definition: the aligned system is orthogonal with equal norms σ on the span
of the gradients (condition number 1), and, independently, Ĝ = σ U Wᵀ from numpy's SVD
G = U S Wᵀ (the Procrustes solution).
"""

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from attnmtl.weighting.aligned_mtl import AlignedMTL
from attnmtl.weighting.registry import create_weighting

TASKS = ["a", "b", "c", "d", "e", "f", "g", "h"]


def aligned(k: int, **options) -> AlignedMTL:
    weighting = create_weighting("aligned_mtl", TASKS[:k], **options)
    assert isinstance(weighting, AlignedMTL)
    return weighting


def combine(weighting: AlignedMTL, grads: Tensor, index: list[int] | None = None) -> Tensor:
    k = grads.shape[0]
    losses = torch.ones(k, dtype=torch.float64)
    return weighting.combine(grads @ grads.T, losses, list(range(k)) if index is None else index)


def aligned_matrix(weighting: AlignedMTL, grads: Tensor) -> Tensor:
    """Ĝ = BG, row by row: B's row i is the c of the one-hot weight vector e_i."""
    k = grads.shape[0]
    rows = []
    for i in range(k):
        weighting.task_weights.zero_()
        weighting.task_weights[i] = 1.0
        rows.append(combine(weighting, grads) @ grads)
    weighting.task_weights.fill_(1.0)
    return torch.stack(rows)


def random_gradients(k: int, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(k, n, generator=g, dtype=torch.float64) + torch.randn(1, n, generator=g)
    return rows * torch.rand(k, 1, generator=g, dtype=torch.float64).mul(3).exp()


@pytest.mark.parametrize("k", [2, 4, 8])
def test_aligned_system_has_condition_number_one(k):
    grads = random_gradients(k, 3 * k, k)
    weighting = aligned(k)
    hat = aligned_matrix(weighting, grads)
    sigma2 = torch.linalg.eigvalsh(grads @ grads.T)[0]
    torch.testing.assert_close(hat @ hat.T, sigma2 * torch.eye(k).double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(combine(weighting, grads) @ grads, hat.sum(0))


def test_matches_the_procrustes_solution_from_numpy_svd():
    grads = random_gradients(5, 9, 0)
    u, s, wt = np.linalg.svd(grads.numpy(), full_matrices=False)
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    hat = s.min() * u @ wt  # σ_min U Wᵀ
    c = combine(aligned(5, task_weights=weights.tolist()), grads)
    np.testing.assert_allclose((c @ grads).numpy(), weights @ hat, rtol=1e-9, atol=1e-12)


def test_orthogonal_equal_norm_gradients_are_unchanged():
    grads = 2.0 * torch.eye(4, 6).double()
    torch.testing.assert_close(combine(aligned(4), grads), torch.ones(4).double())
    weights = [1.0, 2.0, 3.0, 4.0]
    c = combine(aligned(4, task_weights=weights), grads)
    torch.testing.assert_close(c, torch.tensor(weights).double())


def test_orthogonal_gradients_are_shrunk_to_the_smallest_norm():
    norms = torch.tensor([1.0, 2.0, 4.0]).double()
    grads = torch.diag(norms)
    torch.testing.assert_close(combine(aligned(3), grads), 1.0 / norms)
    # median: σ² = 4 (the middle eigenvalue); rmse: σ² = mean(1, 4, 16) = 7
    torch.testing.assert_close(combine(aligned(3, scale_mode="median"), grads), 2.0 / norms)
    torch.testing.assert_close(combine(aligned(3, scale_mode="rmse"), grads), 7**0.5 / norms)


def test_median_of_an_even_count_is_the_lower_middle_value():
    grads = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]).double())
    # kept eigenvalues 1, 4, 9, 16: torch.median's lower middle value is 4
    c = combine(aligned(4, scale_mode="median"), grads)
    torch.testing.assert_close(c, 2.0 / torch.tensor([1.0, 2.0, 3.0, 4.0]).double())


def test_rank_deficient_gram_keeps_the_span():
    g1, g2 = torch.tensor([3.0, 0.0, 4.0]).double(), torch.tensor([0.0, 1.0, 0.0]).double()
    grads = torch.stack([g1, g2, g1 + g2, -g1])  # rank 2
    weighting = aligned(4)
    c = combine(weighting, grads)
    assert torch.isfinite(c).all()
    hat = aligned_matrix(weighting, grads)
    eigenvalues, vectors = torch.linalg.eigh(grads @ grads.T)
    kept = vectors[:, eigenvalues > 1e-9]
    assert kept.shape[1] == 2
    # on the span: ĜĜᵀ = σ² P with P the projector onto the kept eigenvectors
    sigma2 = eigenvalues[eigenvalues > 1e-9].min()
    torch.testing.assert_close(hat @ hat.T, sigma2 * kept @ kept.T, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
def test_zero_gradients_give_zero_coefficients(mode):
    c = combine(aligned(3, scale_mode=mode), torch.zeros(3, 5).double())
    torch.testing.assert_close(c, torch.zeros(3).double())
    grads = torch.tensor([[1.0, 2.0], [0.0, 0.0]]).double()
    c = combine(aligned(2, scale_mode=mode), grads)  # the zero task is off the span
    torch.testing.assert_close(c, torch.tensor([1.0, 0.0]).double())


def test_single_task_is_left_alone():
    torch.testing.assert_close(combine(aligned(1), torch.tensor([[3.0, 4.0]])), torch.ones(1))
    c = combine(aligned(2, task_weights=[2.0, 5.0]), torch.tensor([[3.0, 4.0]]).double(), [1])
    torch.testing.assert_close(c, torch.tensor([5.0]).double())


def test_rcond_decides_the_rank():
    # default rcond = K · eps(float32) ≈ 2.4e-7: eigenvalue ratio 1e-6 is kept, 1e-8 is not
    grads = torch.diag(torch.tensor([1.0, 1e-3]).double())
    torch.testing.assert_close(combine(aligned(2), grads), torch.tensor([1e-3, 1.0]).double())
    c = combine(aligned(2, rcond=1e-5), grads)  # dropped: rank 1, σ = 1
    torch.testing.assert_close(c, torch.tensor([1.0, 0.0]).double())
    grads = torch.diag(torch.tensor([1.0, 1e-4]).double())
    torch.testing.assert_close(combine(aligned(2), grads), torch.tensor([1.0, 0.0]).double())
    c = combine(aligned(2, rcond=0.0), grads)
    torch.testing.assert_close(c, torch.tensor([1e-4, 1.0]).double())


def test_masked_step_uses_the_present_tasks_weights():
    grads = torch.diag(torch.tensor([2.0, 2.0]).double())
    c = combine(aligned(3, task_weights=[1.0, 2.0, 3.0]), grads, index=[2, 0])
    torch.testing.assert_close(c, torch.tensor([3.0, 1.0]).double())


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"scale_mode": "max"}, r"^scale_mode='max'; expected one of: min, median, rmse$"),
        ({"rcond": -1.0}, r"^rcond=-1.0; expected None or a number in \[0, 1\)$"),
        ({"rcond": math.nan}, r"^rcond=nan"),
        (
            {"task_weights": [1.0, 0.0, 1.0]},
            r"^task_weights=\[1.0, 0.0, 1.0\]; expected 3 positive",
        ),
        ({"task_weights": [1.0]}, r"^task_weights=\[1.0\]"),
        ({"mode": "rep"}, r"^mode='rep'"),
    ],
)
def test_options_are_validated(options, match):
    with pytest.raises(ValueError, match=match):
        aligned(3, **options)
