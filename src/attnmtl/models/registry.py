"""The model registry: ``@register_model(name)``, ``create_model(name, **kwargs)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from attnmtl.core.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; unknown names or arguments raise ValueError."""
    model: nn.Module = MODELS.create(name, **kwargs)
    return model


def list_models() -> list[str]:
    """Names of the registered models."""
    return MODELS.names()


def splitting_models() -> list[str]:
    """Names of the registered models with one shared representation that ``features`` mode
    cuts per task (their class sets ``splits_features``)."""
    return [n for n in MODELS.names() if getattr(MODELS.get(n), "splits_features", False)]
