"""The package's layering holds: each layer imports only from the layers below it, no import
circle, no function-level import of attnmtl outside the command line, and importing the lower
layers loads none of the heavy libraries the upper ones need."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "attnmtl"
# Bottom to top. ``attnmtl`` itself (the lazy top-level API) may name anything.
LAYERS = [
    "catalog",  # component names read from the source text (ast), importing nothing
    "core",
    "attention",
    "encoders",
    "models",
    "weighting",
    "transfer",
    "data",
    "eval",
    "run",
    "report",
    "pipeline",
    "bench",
    "cli",
]
LAZY_ALLOWED = {"attnmtl.cli"}  # the start-up-sensitive command line imports lazily
HEAVY = ("pandas", "pyarrow", "sklearn", "matplotlib", "tensorboard", "transformers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def layer(module: str) -> int:
    """The layer index of ``attnmtl.X...`` (``__main__`` sits with the command line)."""
    head = module.split(".")[1]
    return LAYERS.index("cli" if head == "__main__" else head)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(attnmtl module imported, whether inside a function) for every import in ``path``."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("attnmtl"):
                base = child.module or ""
                for alias in child.names:
                    name = f"{base}.{alias.name}"
                    found.append((name if name in MODULES else base, inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.startswith("attnmtl."))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


GRAPH = {
    name: {target for target, _ in imports(path) if target in MODULES and target != name}
    for name, path in MODULES.items()
    if name != "attnmtl"
}


def test_every_module_has_a_layer():
    unplaced = [m for m in GRAPH if m.split(".")[1] not in [*LAYERS, "__main__"]]
    assert not unplaced, f"modules outside the layers {LAYERS}: {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{source} (layer {LAYERS[layer(source)]}) imports {target} ({LAYERS[layer(target)]})"
        for source, targets in GRAPH.items()
        for target in targets
        if target != "attnmtl" and layer(target) > layer(source)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            connect(v)
    assert not circles, circles


def test_no_function_level_import_of_attnmtl_outside_the_command_line():
    lazy = [
        f"{name} imports {target} inside a function"
        for name, path in MODULES.items()
        if name not in LAZY_ALLOWED
        for target, inner in imports(path)
        if inner and name != "attnmtl"
    ]
    assert not lazy, "\n".join(lazy)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The graph is read from the source: an upward import written into a module shows up."""
    fake = tmp_path / "mod.py"
    fake.write_text("def f():\n    from attnmtl.run.trainer import Trainer\n")
    assert imports(fake) == [("attnmtl.run.trainer", True)]
    assert layer("attnmtl.run.trainer") > layer("attnmtl.models.base")


@pytest.mark.parametrize(
    "module",
    ["attnmtl", "attnmtl.core", "attnmtl.attention", "attnmtl.models", "attnmtl.weighting"],
)
def test_importing_a_lower_layer_loads_no_heavy_library(module):
    heavy = f"sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})"
    code = f"import sys, {module}; print({heavy})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_top_level_api_resolves_every_name_it_lists():
    import attnmtl

    for name in attnmtl.__all__:
        assert getattr(attnmtl, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        attnmtl.nothing  # noqa: B018
