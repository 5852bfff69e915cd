"""``mnist1d-mt``: MNIST-1D with its transform parameters as extra tasks ("what" and "where").

Axes: N samples, S template length (12), L stretched length (S + max padding, 72),
T final length (40).

MNIST-1D (Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024; arXiv
2011.14439, 2020) turns ten hand-made 1-D templates into sequences by pad → stretch → scale →
translate → correlated noise where the signal is zero → iid noise → shear → subsample. The
``mnist1d`` package applies that transform one sample at a time; :func:`transform_signals` applies
the same arithmetic to all samples at once and takes the random draws as arguments, so a test can
feed it the package's draws and get the package's output, and the builder can keep each sample's
draws as labels: the translation becomes the ``position`` task and the amplitude factor the
``scale`` task.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch

from attnmtl.core.tasks import Task
from attnmtl.data.dataset import DataSplits, MultiTaskDataset
from attnmtl.data.registry import register_dataset
from attnmtl.data.splits import check_stats, standardisation

TASK_NAMES = ("digit", "position", "scale", "large", "even")
CORR_NOISE_SIGMA = 2.0  # the package's gaussian_filter width for the correlated noise


def mnist1d_templates() -> np.ndarray:
    """(10, S) the package's digit templates (``mnist1d.data.get_templates()['x']``).

    Imported here, not at module level: ``mnist1d.data`` imports matplotlib and requests,
    seconds that ``import attnmtl.data`` should not pay.
    """
    from mnist1d.data import get_templates

    templates: np.ndarray = get_templates()["x"]
    return templates


def interp_rows(values: np.ndarray, length: int) -> np.ndarray:
    """Each row of ``values`` (M, n), read on ``linspace(0, 1, n)``, at ``linspace(0, 1, length)``.

    The same arithmetic as ``np.interp`` (what the package's ``interp1d`` calls for 1-D data):
    the left knot j with ``x[j] <= t``, ``slope * (t - x[j]) + y[j]``, and ``y[j]`` itself at a
    knot, so a value between two zero knots is exactly 0 — the package's noise mask needs that.
    """
    n = values.shape[1]
    knots, points = np.linspace(0, 1, n), np.linspace(0, 1, length)
    left = np.searchsorted(knots, points, side="right") - 1  # (length,)
    right = np.minimum(left + 1, n - 1)
    on_knot = (right == left) | (knots[left] == points)
    width = np.where(on_knot, 1.0, knots[right] - knots[left])
    y_left, y_right = values[:, left], values[:, right]  # (M, length)
    inside = (y_right - y_left) / width * (points - knots[left]) + y_left
    return np.where(on_knot, y_left, inside)


def transform_signals(
    signals: np.ndarray,
    padding: np.ndarray,
    scale_draw: np.ndarray,
    translation: np.ndarray,
    corr_noise: np.ndarray,
    iid_noise: np.ndarray,
    shear_draw: np.ndarray,
    scale_coeff: float = 0.4,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
    final_seq_length: int = 40,
    eps: float = 1e-8,
) -> np.ndarray:
    """MNIST-1D's ``transform`` on N samples at once, with the random draws given.

    Args:
        signals: (N, S) the template of each sample.
        padding: (N,) zeros appended before stretching (the package's ``p``).
        scale_draw: (N,) uniform [0, 1) draw; amplitude factor ``1 + scale_coeff * (u - 0.5)``.
        translation: (N,) circular shift to the right, in [0, L).
        corr_noise: (N, L) standard normal draws, smoothed into the background noise.
        iid_noise: (N, L) standard normal draws of the white noise.
        shear_draw: (N,) uniform [0, 1) draw; slope ``shear_scale * (u - 0.5)``.
        scale_coeff, corr_noise_scale, iid_noise_scale, shear_scale: the package's arguments.
        final_seq_length: T, samples of the output.
        eps: added to the template so that only the padding is exactly zero.

    Returns:
        (N, T) float64 sequences, before the data set's normalisation.
    """
    from scipy.ndimage import gaussian_filter1d  # 0.7 s to import; only needed here

    n, length = corr_noise.shape
    stretched = np.empty((n, length))
    for pad in np.unique(padding):  # one interpolation grid per padding value
        rows = padding == pad
        padded = np.zeros((int(rows.sum()), signals.shape[1] + int(pad)))
        padded[:, : signals.shape[1]] = signals[rows] + eps
        stretched[rows] = interp_rows(padded, length)
    stretched *= (1 + scale_coeff * (scale_draw - 0.5))[:, None]
    shift = (np.arange(length)[None, :] - translation[:, None]) % length  # (N, L)
    x = np.take_along_axis(stretched, shift, axis=1)
    background = gaussian_filter1d(corr_noise_scale * corr_noise, CORR_NOISE_SIGMA, axis=1)
    x = np.where(x != 0, x, background)
    x = x + iid_noise_scale * iid_noise
    x = x - (shear_scale * (shear_draw - 0.5))[:, None] * np.linspace(-0.5, 0.5, length)
    return interp_rows(x, final_seq_length)


def generate_mnist1d(
    digits: np.ndarray,
    rng: np.random.Generator,
    padding: Sequence[int] = (36, 60),
    max_translation: int = 48,
    scale_coeff: float = 0.4,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
    final_seq_length: int = 40,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Unnormalised MNIST-1D sequences of ``digits`` (N,), drawn as the package draws them.

    Returns:
        (N, T) float64 sequences and the per-sample transform parameters: ``padding``,
        ``translation`` (ints), ``scale`` (amplitude factor) and ``shear`` (slope).
    """
    templates = mnist1d_templates()  # (10, S)
    low, high = int(padding[0]), int(padding[1])
    n, length = len(digits), templates.shape[1] + high
    pad = low + (rng.random(n) * (high - low + 1)).astype(np.int64)
    scale_draw = rng.random(n)
    translation = rng.integers(max_translation, size=n)
    corr_noise, iid_noise = rng.standard_normal((n, length)), rng.standard_normal((n, length))
    shear_draw = rng.random(n)
    x = transform_signals(
        templates[digits],
        pad,
        scale_draw,
        translation,
        corr_noise,
        iid_noise,
        shear_draw,
        scale_coeff,
        corr_noise_scale,
        iid_noise_scale,
        shear_scale,
        final_seq_length,
    )
    params = {
        "padding": pad,
        "translation": translation,
        "scale": 1 + scale_coeff * (scale_draw - 0.5),
        "shear": shear_scale * (shear_draw - 0.5),
    }
    return x, params


def _check_arguments(
    sizes: Sequence[int],
    tasks: Sequence[str],
    position_bins: int,
    padding: Sequence[int],
    max_translation: int,
    noise: Sequence[float],
    final_seq_length: int,
) -> None:
    if sizes[0] < 2 or min(sizes[1:]) < 0:
        raise ValueError(f"num_train, num_val, num_test = {list(sizes)}; expected >= 2, >= 0, >= 0")
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(
            f"tasks={list(tasks)!r}; expected distinct names among: {', '.join(TASK_NAMES)}"
        )
    if len(padding) != 2 or not 0 <= padding[0] <= padding[1]:
        raise ValueError(f"padding={list(padding)!r}; expected (low, high) with 0 <= low <= high")
    length = mnist1d_templates().shape[1] + int(padding[1])
    if not 1 <= max_translation <= length:
        raise ValueError(f"max_translation={max_translation!r}; expected in [1, {length}]")
    if not 2 <= position_bins <= max_translation:
        raise ValueError(f"position_bins={position_bins!r}; expected in [2, max_translation]")
    if min(noise) < 0:
        raise ValueError(f"scale/noise/shear coefficients {list(noise)}; expected >= 0")
    if final_seq_length < 2:
        raise ValueError(f"final_seq_length={final_seq_length!r}; expected >= 2")


@register_dataset("mnist1d-mt")
def mnist1d_mt(
    num_train: int = 4000,
    num_val: int = 500,
    num_test: int = 1000,
    seed: int = 42,
    tasks: Sequence[str] = ("digit", "position", "scale"),
    position_bins: int = 8,
    padding: Sequence[int] = (36, 60),
    max_translation: int = 48,
    scale_coeff: float = 0.4,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
    final_seq_length: int = 40,
    input_stats: Sequence[float] | None = None,
    scale_stats: Sequence[float] | None = None,
) -> DataSplits:
    """MNIST-1D sequences labelled with their digit and with how they were transformed.

    One pool of ``num_train + num_val + num_test`` samples is generated as the package's
    ``make_dataset`` does (an equal number per class in class order, then shuffled; with a
    total that is not a multiple of 10 the last class-order samples are dropped after the
    shuffle), normalised by the pool's mean and std, and cut into train, val and test in
    that order. The generation arguments default to the package's ``get_dataset_args()``.

    Tasks (pick any of them in ``tasks``):

    * ``digit``: the template, 10 classes (MNIST-1D's task).
    * ``position``: the translation k in [0, ``max_translation``) cut into ``position_bins``
      bins, ``k * position_bins // max_translation`` — where the pattern starts. Eight bins by
      default: a bin is 6 shifts, 3.3 of the 40 output steps, half the pattern's own width (6
      to 9 steps), so a model must locate the pattern, not only detect it. Measured (4,000
      train / 1,000 test): logistic regression 36% and the paper's CNN 91-92% after 2,000
      steps, as hard as the digit task (32%, 92-93%); 4 bins gave 43% / 96-97% (easier than
      the digit), 12 bins 36% / 87-89%.
    * ``scale``: the amplitude factor ``1 + scale_coeff * (u - 0.5)`` (regression), standardised
      with the training split's mean and std (kept in ``info``) unless ``scale_stats`` is given.
      Measured: ridge regression R² 0.0, the paper's CNN R² 0.52 — only a non-linear model
      can separate the amplitude from the noise and shear.
    * ``large``: binary, digit >= 5; ``even``: 2 classes, 1 where the digit is even — the seed
      note's two tasks.

    Args:
        num_train, num_val, num_test: split sizes.
        seed: seed of the generator (``np.random.default_rng``).
        tasks: the tasks, in order.
        position_bins: classes of the ``position`` task.
        padding, max_translation, scale_coeff, corr_noise_scale, iid_noise_scale, shear_scale,
            final_seq_length: the package's generation arguments (change them for shifted sets).
        input_stats: (mean, std) to normalise inputs with instead of the pool's, e.g. a reference
            set's when building a shifted test set.
        scale_stats: (mean, std) to standardise the ``scale`` target with instead of the
            training split's.

    Returns:
        Train, val and test splits of (N, T, 1) float32 sequences; ``meta`` holds each
        sample's ``digit``, ``padding``, ``translation``, ``scale`` and ``shear``.
    """
    sizes = (num_train, num_val, num_test)
    tasks = tuple(tasks)
    noise = (scale_coeff, corr_noise_scale, iid_noise_scale, shear_scale)
    _check_arguments(sizes, tasks, position_bins, padding, max_translation, noise, final_seq_length)
    check_stats(input_stats, "input_stats")
    check_stats(scale_stats, "scale_stats")
    total = sum(sizes)
    rng = np.random.default_rng(seed)
    digits = np.repeat(np.arange(10), -(-total // 10))
    x, params = generate_mnist1d(
        digits,
        rng,
        padding=padding,
        max_translation=max_translation,
        scale_coeff=scale_coeff,
        corr_noise_scale=corr_noise_scale,
        iid_noise_scale=iid_noise_scale,
        shear_scale=shear_scale,
        final_seq_length=final_seq_length,
    )
    order = rng.permutation(len(digits))[:total]
    x, digits = x[order], digits[order]
    params = {k: v[order] for k, v in params.items()}
    mean, std = (x.mean(), x.std()) if input_stats is None else input_stats
    inputs = torch.from_numpy(((x - mean) / std).astype(np.float32)).unsqueeze(-1)  # (N, T, 1)
    labels = {
        "digit": torch.from_numpy(digits),
        "position": torch.from_numpy(params["translation"] * position_bins // max_translation),
        "large": torch.from_numpy((digits >= 5).astype(np.float32)),
        "even": torch.from_numpy((digits % 2 == 0).astype(np.int64)),
    }
    info: dict[str, object] = {"name": "mnist1d-mt", "seed": seed}
    if "scale" in tasks:
        if scale_stats is None:
            scale_stats = standardisation(params["scale"][:num_train], "scale")
        standard = (params["scale"] - scale_stats[0]) / scale_stats[1]
        labels["scale"] = torch.from_numpy(standard.astype(np.float32))
        info.update(scale_mean=float(scale_stats[0]), scale_std=float(scale_stats[1]))
    kinds = {
        "digit": Task("digit", "multiclass", 10),
        "position": Task("position", "multiclass", position_bins),
        "scale": Task("scale", "regression"),
        "large": Task("large", "binary"),
        "even": Task("even", "multiclass", 2),
    }
    meta = {"digit": torch.from_numpy(digits)}
    meta.update({k: torch.from_numpy(v) for k, v in params.items()})
    pool = MultiTaskDataset(
        inputs,
        {t: labels[t] for t in tasks},
        [kinds[t] for t in tasks],
        layout="sequence",
        meta=meta,
    )
    bounds = np.cumsum([0, *sizes])
    parts = [pool.subset(torch.arange(a, b)) for a, b in pairwise(bounds)]
    info.update(
        input_mean=float(mean),
        input_std=float(std),
        position_bins=position_bins,
        position_bin_width=max_translation / position_bins,
        generation={
            "padding": [int(padding[0]), int(padding[1])],
            "max_translation": max_translation,
            "scale_coeff": scale_coeff,
            "corr_noise_scale": corr_noise_scale,
            "iid_noise_scale": iid_noise_scale,
            "shear_scale": shear_scale,
            "final_seq_length": final_seq_length,
        },
    )
    return DataSplits(parts[0], parts[1], parts[2], info)
