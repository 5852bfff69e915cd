"""The data set registry: ``@register_dataset(name)``, ``create_dataset(name, **kwargs)``.

A registered builder takes typed keyword arguments (sizes, seed, ...) and returns
:class:`~attnmtl.data.dataset.DataSplits`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attnmtl.core.registry import Registry
from attnmtl.data.dataset import DataSplits

DATASETS: Registry[Callable[..., DataSplits]] = Registry("dataset")
register_dataset = DATASETS.register


def create_dataset(name: str, **kwargs: Any) -> DataSplits:
    """Build the registered data set ``name``; unknown names or arguments raise ValueError."""
    splits: DataSplits = DATASETS.create(name, **kwargs)
    return splits


def list_datasets() -> list[str]:
    """Names of the registered data sets."""
    return DATASETS.names()
