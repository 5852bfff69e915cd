"""Split indices for built-in data sets: class-stratified pools and train-split standardisation.

Axes: N samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from attnmtl.core.tasks import Task


def check_fractions(fractions: Sequence[float], name: str = "fractions") -> tuple[float, ...]:
    """``fractions`` as a tuple, checked to be positive and to sum to 1."""
    values = tuple(float(f) for f in fractions)
    if not values or any(not f > 0 for f in values) or abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(f"{name}={list(fractions)!r}; expected positive values summing to 1")
    return values


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint index sets that together cover ``labels``, each class cut by ``fractions``.

    Each class's indices are shuffled with ``rng`` and cut at the rounded cumulative
    fractions, so every part holds about its fraction of every class (within one sample).
    A class with at least as many samples as parts puts at least one sample in every part.

    Args:
        labels: (N,) integer class of each sample.
        fractions: share of each part (positive, summing to 1).
        rng: the random generator that shuffles each class.

    Returns:
        One sorted int64 index array per part.
    """
    shares = check_fractions(fractions)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels have shape {labels.shape}; expected (N,)")
    parts: list[list[np.ndarray]] = [[] for _ in shares]
    cumulative = np.cumsum(shares)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n = len(members)
        sizes = np.diff(np.rint(cumulative * n).astype(np.int64), prepend=0)
        while n >= len(shares) and (sizes == 0).any():  # at least one sample in every part
            sizes[np.argmin(sizes)] += 1
            sizes[np.argmax(sizes)] -= 1
        for i, part in enumerate(np.split(members, np.cumsum(sizes)[:-1])):
            parts[i].append(part)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def standardisation(values: np.ndarray, name: str) -> tuple[float, float]:
    """(mean, std) of ``values`` for standardising a regression target; std must be > 0."""
    mean, std = float(np.mean(values)), float(np.std(values))
    if not std > 0:
        raise ValueError(f"target {name!r} is constant on the training split; cannot standardise")
    return mean, std


def check_stats(stats: Sequence[float] | None, name: str) -> None:
    """Raise ValueError unless ``stats`` is None or a (mean, std) pair with std > 0."""
    if stats is not None and (len(stats) != 2 or not float(stats[1]) > 0):
        raise ValueError(f"{name}={list(stats)!r}; expected (mean, std) with std > 0")


def target_stats(
    info: Mapping[str, Any], tasks: Mapping[str, Task]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Regression task → (mean, std) (per output) its targets were standardised by, read from
    a data set's ``info``: a files run's ``standardize_targets``, or a built-in data set's
    ``TASK_mean`` / ``TASK_std``. Metrics and predictions map back to natural units with them."""
    stats = {}
    standardized = info.get("standardize_targets") or {}
    for name, task in tasks.items():
        if task.kind != "regression":
            continue
        if name in standardized:  # files runs: per output
            pair = standardized[name]
            stats[name] = (torch.tensor(pair["mean"]), torch.tensor(pair["std"]))
        elif f"{name}_mean" in info and f"{name}_std" in info:  # built-in data sets
            stats[name] = (
                torch.tensor([float(info[f"{name}_mean"])]),
                torch.tensor([float(info[f"{name}_std"])]),
            )
    return stats
