"""The import graph of src/seawall: no circles anywhere; agent/protect and agent/recover apart.

Every import of a seawall module counts: module-level ones, those under
``if TYPE_CHECKING:`` and those inside functions. A circle hidden behind TYPE_CHECKING or a
function-level import is still a circle in the design (neither module can be read, tested
or moved without the other), and the circles this test was written against were all of
that kind. The lazy imports that exist (a database, a TLS context loaded on first use) are
in no circle, so counting them costs nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import seawall

SRC = Path(seawall.__file__).resolve().parent.parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module and package under ``root`` (the src dir)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterable[str]:
    """The known modules one import statement loads (the deepest one of each dotted name)."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        # ``from pkg import name`` loads pkg.name when that is a module, else pkg.
        candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                      for alias in node.names]
    else:
        return
    for name in candidates:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            yield name


def import_graph(root: Path, top: str) -> dict[str, set[str]]:
    """Module -> the ``top`` modules it imports, anywhere in its text."""
    files = {name: path for name, path in module_names(root).items()
             if name == top or name.startswith(top + ".")}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {target for node in ast.walk(tree)
                       for target in _imported(node, name, is_package, known)
                       if target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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
    return sorted(found)


def test_no_import_circles_in_seawall() -> None:
    found = cycles(import_graph(SRC, "seawall"))
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_protect_and_recover_do_not_import_each_other() -> None:
    graph = import_graph(SRC, "seawall")
    sides = ("seawall.agent.protect", "seawall.agent.recover")
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items() for target in targets
        for this, other in (sides, sides[::-1])
        if (module == this or module.startswith(this + "."))
        and (target == other or target.startswith(other + ".")))
    assert not crossing, "protect/ and recover/ import each other:\n" + "\n".join(crossing)


def test_the_checker_sees_circles_behind_type_checking_and_in_functions(tmp_path: Path) -> None:
    """The checker itself: a circle through a TYPE_CHECKING import, one through a
    function-level relative import, and a clean chain beside them."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (package / "b.py").write_text("from pkg import a\n")
    (package / "sub" / "c.py").write_text("def f():\n    from . import d\n")
    (package / "sub" / "d.py").write_text("import pkg.sub.c\n")
    (package / "e.py").write_text("from pkg.sub.c import f\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.e"] == {"pkg.sub.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]
