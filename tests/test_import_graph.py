"""The package's modules import each other without cycles (module- and function-level imports)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "csaws_tools"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str], package_dir: Path = PACKAGE) -> set[str]:
    """Package modules ``path`` imports anywhere in its code (inside functions too)."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from . import x" may name a submodule x.
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # The deepest package module the name refers to.
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph(package_dir: Path = PACKAGE) -> dict[str, set[str]]:
    files = sorted(package_dir.rglob("*.py"))
    modules = {module_name(p, package_dir) for p in files}
    return {module_name(p, package_dir): imports_of(p, modules, package_dir) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules: importing the parent is not a cycle of code
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "csaws_tools.batch" in graph and "csaws_tools.execution.tasks" in graph["csaws_tools.execution.scaleout"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_function_level_import_cycle_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("def late():\n    from ..b import thing\n")
    (pkg / "b.py").write_text("import os\n\ndef f():\n    from . import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg", "pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.c", "pkg.b", "pkg.a"]
    (pkg / "b.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None


def area(module: str) -> str:
    """The part of the package a module belongs to: its subpackage (``csaws_tools.dicom``) or itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def cross_area_imports(package_dir: Path = PACKAGE) -> list[tuple[str, str, str]]:
    """(importer, imported module, name) for every underscore name imported from another area."""
    files = sorted(package_dir.rglob("*.py"))
    found = []
    for path in files:
        name = module_name(path, package_dir)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and area(base) != area(name):
                    found.append((name, base, alias.name))
    return found


def test_no_stage_imports_another_stages_internals():
    assert cross_area_imports() == []


def test_the_execution_layer_imports_no_stage():
    graph = import_graph()
    stages = ("csaws_tools.dicom", "csaws_tools.masks", "csaws_tools.patches", "csaws_tools.review",
              "csaws_tools.sample", "csaws_tools.train", "csaws_tools.cli")
    for module, imported in graph.items():
        if module.startswith("csaws_tools.execution"):
            assert not [m for m in imported if m.startswith(stages)], module


def test_an_underscore_import_across_areas_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    for f in ("__init__.py", "a/__init__.py", "b/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "a" / "x.py").write_text("def _inner():\n    pass\n")
    (pkg / "a" / "y.py").write_text("from .x import _inner\n")  # same area: allowed
    (pkg / "b" / "z.py").write_text("from ..a.x import _inner\n")
    assert cross_area_imports(pkg) == [("pkg.b.z", "pkg.a.x", "_inner")]
