"""The package's shape: imports point one way, no cycles, no module long without a reason.

Read statically (``ast``), so the rules hold for every import, function-level ones
included, whether or not a test happens to execute it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "scripts" / "imgprep"
MAX_LINES = 400
LONG_MARKER = "Long because:"

# layer -> the layers (first part of the module name under imgprep) it must not import.
# Top-level modules (config, index, atomic, ...) are each their own "layer" by name.
FORBIDDEN = {
    "files": {"kernels", "stages", "formats", "sources", "index", "config"},
    "kernels": {"files", "stages", "formats", "sources", "index", "config"},
    "formats": {"stages"},
    "sources": {"stages", "formats"},
    "stages": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The package module an import names: itself, or the package holding the name."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """imgprep modules ``path`` imports anywhere in it (absolute and relative forms)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from imgprep.kernels import decode" imports the submodule decode; a name
            # that is no submodule comes from the package itself
            names = [f"{base}.{alias.name}" for alias in node.names]
            if any(name not in known for name in names):
                names.append(base)
        for name in names:
            if name.split(".")[0] == "imgprep":
                target = resolve(name, known)
                if target and target != this and target != "imgprep":
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {name: imported(path, known) for name, path in known.items()}
    return edges


def layer(name: str) -> str:
    """imgprep.kernels.decode -> kernels; imgprep.config -> config."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_function_level_and_package_imports():
    """Guard the guard: known imports of each kind are found."""
    edges = graph()
    assert "imgprep.kernels.decode" in edges["imgprep.kernels.resize"]  # module level
    assert "imgprep.tarindex" in edges["imgprep.stages.resize"]  # inside a function
    assert "imgprep.slim" in edges["imgprep.stages.embed"]  # from imgprep import slim


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("lower", sorted(FORBIDDEN))
def test_layers_import_only_downwards(lower):
    """files and kernels know no stage, format, source, index or config; formats know no
    stage; sources no stage or format; no stage imports another stage."""
    bad = []
    for name, targets in graph().items():
        if layer(name) != lower:
            continue
        for target in sorted(targets):
            if layer(target) in FORBIDDEN[lower]:
                bad.append(f"{name} imports {target}")
            if lower == "stages" and layer(target) == "stages" and target != "imgprep.stages":
                bad.append(f"{name} imports another stage, {target}")
    assert not bad, "\n".join(bad)


def test_no_module_is_long_without_a_reason():
    """Above MAX_LINES lines a module's docstring opens with why (``Long because: ...``)."""
    long = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if LONG_MARKER not in docstring.split("\n\n")[0]:
            long.append(f"{name}: {text.count(chr(10))} lines")
    assert not long, f"over {MAX_LINES} lines without '{LONG_MARKER}' up front:\n" + "\n".join(long)
