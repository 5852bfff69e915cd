"""The names of the built-in components, read from the package's source without importing it.

``attnmtl list models`` (without ``-v``) only needs names. Importing the registries imports torch
(over a second by itself), so the names are read instead from the ``@register_*("name")``
decorators in the source files, with :mod:`ast`: the listing starts in a fraction of a second.
``tests/test_catalog.py`` checks that these names are exactly the registries' own.
"""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

# Kind → (the sub-package holding its components, the decorator that registers one).
KINDS = {
    "datasets": ("data", "register_dataset"),
    "encoders": ("encoders", "register_encoder"),
    "models": ("models", "register_model"),
    "weightings": ("weighting", "register_weighting"),
}


def registered_names(kind: str) -> list[str]:
    """Sorted names registered with ``kind``'s decorator in attnmtl's own source files."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of: {', '.join(KINDS)}")
    package, decorator = KINDS[kind]
    folder = Path(str(resources.files("attnmtl") / package))
    names = set()
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and isinstance(deco.func, ast.Name)
                    and deco.func.id == decorator
                    and deco.args
                    and isinstance(deco.args[0], ast.Constant)
                    and isinstance(deco.args[0].value, str)
                ):
                    names.add(deco.args[0].value)
    return sorted(names)
