"""``multidigits``: two scikit-learn digits side by side; classify the left and the right one.

Axes: N samples, H height (8), W width (16 - overlap).

A small offline stand-in for MultiMNIST (Sabour, Frosst & Hinton, "Dynamic Routing Between
Capsules", NeurIPS 2017), the usual two-digit multi-task benchmark (Sener & Koltun,
"Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018): both tasks read the same
image but need different regions of it, which is what per-task spatial attention is for. The
digits are scikit-learn's 1,797 8x8 images (``load_digits``, shipped with the package, no
download). The source images are first cut into disjoint train/val/test pools, stratified by
class, so test pairs are made of digit images no model has seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.datasets import load_digits

from attnmtl.core.tasks import Task
from attnmtl.data.dataset import DataSplits, MultiTaskDataset
from attnmtl.data.registry import register_dataset
from attnmtl.data.splits import (
    check_fractions,
    check_stats,
    standardisation,
    stratified_split,
)

DIGIT_SIZE = 8
PIXEL_MAX = 16.0  # load_digits pixels are counts 0..16


def side_by_side(left: np.ndarray, right: np.ndarray, overlap: int) -> np.ndarray:
    """(N, 8, 8) left and right images on one (N, 8, 16 - overlap) canvas.

    The right image starts ``overlap`` columns before the left one ends; in the shared columns
    a pixel is the max of the two (ink over ink stays ink, as when two strokes cross on paper,
    and the result stays in the pixels' range), so neither digit is erased by the other.
    """
    n, size = left.shape[0], left.shape[-1]
    canvas = np.zeros((n, left.shape[1], 2 * size - overlap), dtype=left.dtype)  # (N, H, W)
    canvas[:, :, :size] = left
    canvas[:, :, size - overlap :] = np.maximum(canvas[:, :, size - overlap :], right)
    return canvas


def _check_arguments(
    sizes: Sequence[int],
    overlap: int,
    noise: float,
    source_split: Sequence[float],
    sum_stats: Sequence[float] | None,
) -> None:
    if sizes[0] < 2 or min(sizes[1:]) < 0:
        raise ValueError(f"num_train, num_val, num_test = {list(sizes)}; expected >= 2, >= 0, >= 0")
    if not 0 <= overlap < DIGIT_SIZE:
        raise ValueError(f"overlap={overlap!r}; expected columns in [0, {DIGIT_SIZE - 1}]")
    if not noise >= 0:
        raise ValueError(f"noise={noise!r}; expected a pixel noise std >= 0")
    if len(source_split) != 3:
        raise ValueError(f"source_split={list(source_split)!r}; expected (train, val, test)")
    check_fractions(source_split, "source_split")
    check_stats(sum_stats, "sum_stats")


@register_dataset("multidigits")
def multidigits(
    num_train: int = 10000,
    num_val: int = 1000,
    num_test: int = 2000,
    overlap: int = 2,
    noise: float = 0.0,
    with_sum: bool = False,
    source_split: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    sum_stats: Sequence[float] | None = None,
) -> DataSplits:
    """Pairs of 8x8 digits side by side with tasks ``left`` and ``right`` (and ``sum``).

    The 1,797 source images are split into train/val/test pools by ``source_split``,
    stratified by class; each split then draws its left and right images independently and
    uniformly from its own pool. Pixels are scaled to [0, 1]; overlapping columns take the max
    of the two images; ``noise`` adds Gaussian pixel noise of that std, clipped back to [0, 1]
    (for shifted versions: the noise is drawn after the pairs, so one seed gives the same
    pairs at every noise level).

    Args:
        num_train, num_val, num_test: pairs per split.
        overlap: columns shared by the two digits, in [0, 7].
        noise: std of the added pixel noise (0 = none).
        with_sum: add the ``sum`` task, regression of left + right standardised with the
            training split's mean and std (kept in ``info``) unless ``sum_stats`` is given.
        source_split: fractions of the source images in the train, val and test pools.
        seed: seed of the generator (``np.random.default_rng``).
        sum_stats: (mean, std) to standardise ``sum`` with instead of the training split's.

    Returns:
        Train, val and test splits of (N, 1, 8, 16 - overlap) float32 images; ``meta`` holds
        ``left_source`` and ``right_source``, the row of each digit in ``load_digits()``.
    """
    sizes = (num_train, num_val, num_test)
    _check_arguments(sizes, overlap, noise, source_split, sum_stats)
    source = load_digits()
    images, classes = source.images / PIXEL_MAX, source.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    pools = stratified_split(classes, source_split, rng)
    draws = [
        (rng.choice(pool, n), rng.choice(pool, n)) for pool, n in zip(pools, sizes, strict=True)
    ]
    totals = classes[draws[0][0]] + classes[draws[0][1]]
    if with_sum and sum_stats is None:
        sum_stats = standardisation(totals, "sum")
    tasks = [Task("left", "multiclass", 10), Task("right", "multiclass", 10)]
    if with_sum:
        tasks.append(Task("sum", "regression"))
    parts = []
    for left, right in draws:
        canvas = side_by_side(images[left], images[right], overlap)  # (N, H, W)
        if noise > 0:
            canvas = np.clip(canvas + noise * rng.standard_normal(canvas.shape), 0.0, 1.0)
        labels = {
            "left": torch.from_numpy(classes[left]),
            "right": torch.from_numpy(classes[right]),
        }
        if with_sum and sum_stats is not None:
            total = (classes[left] + classes[right] - sum_stats[0]) / sum_stats[1]
            labels["sum"] = torch.from_numpy(total.astype(np.float32))
        parts.append(
            MultiTaskDataset(
                torch.from_numpy(canvas.astype(np.float32)).unsqueeze(1),  # (N, 1, H, W)
                labels,
                tasks,
                layout="image",
                meta={
                    "left_source": torch.from_numpy(left),
                    "right_source": torch.from_numpy(right),
                },
            )
        )
    info: dict[str, object] = {
        "name": "multidigits",
        "seed": seed,
        "overlap": overlap,
        "overlap_combine": "max",
        "noise": noise,
        "source_pool_sizes": [len(pool) for pool in pools],
    }
    if with_sum and sum_stats is not None:
        info.update(sum_mean=float(sum_stats[0]), sum_std=float(sum_stats[1]))
    return DataSplits(parts[0], parts[1], parts[2], info)
