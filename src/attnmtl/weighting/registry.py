"""The weighting registry: ``@register_weighting(name)``, ``create_weighting(name, tasks, ...)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attnmtl.core.registry import Registry
from attnmtl.weighting.base import Weighting

WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")
register_weighting = WEIGHTINGS.register


def create_weighting(name: str, tasks: Sequence[str], **kwargs: Any) -> Weighting:
    """Build the registered strategy ``name`` for ``tasks``; unknown names/arguments: ValueError."""
    weighting: Weighting = WEIGHTINGS.create(name, tasks=list(tasks), **kwargs)
    return weighting


def list_weightings() -> list[str]:
    """Names of the registered strategies."""
    return WEIGHTINGS.names()
