"""Name → factory registries (timm's ``register_model`` / ``create_model`` pattern).

A registry checks keyword arguments against the factory's signature before calling it, so an
unknown or misspelt hyperparameter fails with a message that names it and the valid choices.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def check_keywords(factory: Callable[..., Any], kwargs: dict[str, Any], where: str) -> None:
    """Raise ValueError if ``kwargs`` holds a key ``factory``'s signature does not accept."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in kwargs:
        if key not in valid:
            raise ValueError(
                f"unknown argument {key!r} for {where}; expected one of: "
                f"{', '.join(valid) or '(no arguments)'}"
            )


class Registry(Generic[F]):
    """A named collection of factories (classes or functions) of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``factory`` under ``name``; a name may be registered once."""

        def decorator(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> F:
        """The factory registered as ``name``; ValueError naming the valid choices otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(self.names())
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of: {choices}") from None

    def check_kwargs(self, name: str, kwargs: dict[str, Any]) -> None:
        """Raise ValueError if ``kwargs`` holds a key the factory does not accept."""
        check_keywords(self.get(name), kwargs, f"{self.kind} {name!r}")

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the component registered as ``name`` with checked keyword arguments."""
        self.check_kwargs(name, kwargs)
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
