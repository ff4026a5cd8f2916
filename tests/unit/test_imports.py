"""kdedge's modules import each other without cycles, and the layers import downward only.

The graph is read from the source (imports inside functions count too, since a cycle there is
still a knot a newcomer must untie), so the test needs no import of kdedge itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kdedge"


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, read from every .py file under `package`."""
    root = package.name
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name: str) -> str | None:  # a.b.c.attr -> the longest prefix that is a module
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package_of = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package_of
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{node.module}" if node.module else anchor
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                if target == root or target.startswith(root + "."):
                    found = known(target)
                    # a package importing its own submodules is how packages are built
                    if found and found != name and not (path.name == "__init__.py"
                                                        and found.startswith(name + ".")):
                        graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_kdedge_has_no_import_cycle() -> None:
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "kdedge"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize("b_imports", [
    "from kdedge.a import thing\n",  # at the top
    "def later():\n    from kdedge import a\n",  # inside a function
    "from . import a\n",  # relative
])
def test_a_cycle_is_found_however_it_is_written(tmp_path: Path, b_imports: str) -> None:
    package = write_package(tmp_path, {"__init__.py": "", "a.py": "from kdedge import b\n",
                                       "b.py": b_imports})
    assert cycles(import_graph(package)) == [["kdedge.a", "kdedge.b"]]


def test_a_chain_without_a_cycle_passes(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "__init__.py": "", "a.py": "from kdedge.sub import c\n",
        "sub/__init__.py": "from kdedge.sub import c\n", "sub/c.py": "import kdedge.b\n", "b.py": ""})
    assert cycles(import_graph(package)) == []
    assert import_graph(package)["kdedge.a"] == {"kdedge.sub.c", "kdedge.sub"}


def test_the_layers_import_downward() -> None:
    """The task kinds, model families and training infrastructure never import a stage, so a
    stage can call them (and a kind added there needs no stage edit)."""
    graph = import_graph(PACKAGE)
    stages = {name for name in graph if name.endswith(".stage")} | {"kdedge.pipeline"}
    lower = [name for name in graph if name.startswith(("kdedge.tasks", "kdedge.models",
                                                          "kdedge.training"))]
    upward = {name: sorted(graph[name] & stages) for name in lower if graph[name] & stages}
    assert not upward, f"imports of stage modules from lower layers: {upward}"
