"""Name → factory registries (timm's ``register_model`` / ``create_model`` pattern).

A registry checks keyword arguments against the factory's signature before calling it, so an
unknown or misspelt hyperparameter fails with a message that names it and the valid choices.

Besides registered names, :meth:`Registry.get` takes an import path ``package.module:Factory``
(as in a config's ``model: {name: "mypkg.nets:MyModel", ...}``), whose factory is then used —
and keyword-checked — like a registered one. Importing runs a module's code and the factory
is then called with the config's arguments, so a config is treated as untrusted: a path inside
``attnmtl`` to a factory registered in the same registry is always allowed (it is another name
for it); any other path is refused unless the user allows imports explicitly, with the
environment variable ``ATTNMTL_ALLOW_IMPORTS=1`` or ``attnmtl train --allow-imports``
(:func:`allow_imports`). Nothing outside attnmtl is imported before that check.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

ALLOW_IMPORTS_ENV = "ATTNMTL_ALLOW_IMPORTS"
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_allowed: list[bool] = [False]  # set by allow_imports()


def imports_allowed() -> bool:
    """Whether import paths outside attnmtl may be imported (env variable or allow_imports)."""
    return _allowed[-1] or os.environ.get(ALLOW_IMPORTS_ENV, "") == "1"


@contextmanager
def allow_imports(allowed: bool = True) -> Iterator[None]:
    """Allow (or not) component import paths outside attnmtl inside this block."""
    _allowed.append(allowed)
    try:
        yield
    finally:
        _allowed.pop()


def import_factory(
    path: str, kind: str, registered: Collection[Callable[..., Any]] = ()
) -> Callable[..., Any]:
    """The callable at ``package.module:Attribute``, imported only when allowed (see above);
    without permission only a path inside attnmtl to one of ``registered`` is taken."""
    if not IMPORT_PATH.fullmatch(path):
        raise ValueError(f"{kind} {path!r}: expected a registered name or package.module:Factory")
    module_name, _, attribute = path.partition(":")
    if "__main__" in module_name.split("."):  # importing it would run a program
        raise ValueError(f"{kind} {path!r}: a __main__ module cannot provide a component")
    inside = module_name == "attnmtl" or module_name.startswith("attnmtl.")
    allowed = imports_allowed()
    how = f"refused unless allowed ({ALLOW_IMPORTS_ENV}=1 or attnmtl train --allow-imports)"
    if not inside and not allowed:
        raise ValueError(
            f"{kind} {path!r} is imported from outside attnmtl, which runs its code; {how}"
        )
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (Exception, SystemExit) as err:  # the user's module may raise anything on import
        message = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{kind} {path!r} cannot be imported: {message}") from None
    if not allowed and not any(found is factory for factory in registered):
        raise ValueError(f"{kind} {path!r} is not a registered {kind}; {how}")
    if not callable(found):
        raise ValueError(f"{kind} {path!r} is a {type(found).__name__}, not a class or function")
    return cast(Callable[..., Any], found)


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
        """The factory registered as ``name``, or imported from ``package.module:Factory``
        (see the module's docstring); ValueError naming the valid choices otherwise."""
        if name not in self._entries and ":" in name:
            return cast(F, import_factory(name, self.kind, list(self._entries.values())))
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


def _arg_docs(factory: Callable[..., Any]) -> dict[str, str]:
    """Argument → the first sentence of its entry in the factory's Google-style ``Args:``."""
    doc = inspect.getdoc(factory.__init__ if inspect.isclass(factory) else factory) or ""
    if inspect.isclass(factory) and "Args:" not in doc:
        doc = inspect.getdoc(factory) or ""
    docs: dict[str, str] = {}
    inside, current = False, None
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:"):
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):  # the next section
            break
        entry = re.match(r"    (\*{0,2}\w+)(?: \(.*?\))?: (.*)", line)
        if entry:
            current = entry.group(1).lstrip("*")
            docs[current] = entry.group(2).strip()
        elif current and line.startswith("        "):
            docs[current] += " " + line.strip()
    first = {k: re.split(r"(?<=[.;])\s", v, maxsplit=1)[0] for k, v in docs.items()}
    return {k: v.rstrip(".;").replace("``", "") for k, v in first.items()}


def describe_options(
    factory: Callable[..., Any], skip: Collection[str] = ()
) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of each keyword a factory takes, as a config gives
    them; ``required`` where there is no default. ``skip``: arguments filled in for the user."""
    docs = _arg_docs(factory)
    rows = []
    for name, param in inspect.signature(factory).parameters.items():
        if name in skip or name == "self" or param.kind in (param.VAR_POSITIONAL,):
            continue
        if param.kind is param.VAR_KEYWORD:
            rows.append((f"**{name}", "", "", docs.get(name, "")))
            continue
        annotation = param.annotation
        shown = (
            ""
            if annotation is param.empty
            else annotation
            if isinstance(annotation, str)
            else getattr(annotation, "__name__", str(annotation))
        )
        default = "required" if param.default is param.empty else repr(param.default)
        rows.append((name, str(shown), default, docs.get(name, "")))
    return rows
