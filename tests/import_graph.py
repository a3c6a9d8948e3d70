"""The import graph of our own packages, read from the source with ``ast`` (nothing is imported).

Every ``import`` statement counts wherever it sits: at module level, inside a function or a
class, under ``if TYPE_CHECKING:``, in a ``try``. A type-only import is the same dependency
for a reader, so it is an edge like any other. Imports of anything outside the packages
asked for (the standard library, Django, ...) are dropped. Dynamic imports
(``importlib.import_module("...")``) are not seen.

Each import resolves to the most specific module file it names:

- ``import a.b.c``: ``a.b.c`` if that module exists, else ``a.b``, else ``a``;
- ``from a.b import name``: ``a.b.name`` when ``name`` is a submodule, else ``a.b``
  (its ``__init__`` when ``a.b`` is a package);
- relative imports resolve against the importing module's package first.

Parents' ``__init__`` files that Python runs on the way are not edges: a module that
imports ``a.b.c`` depends on ``a.b.c``, not on ``a``.

Modules under a ``migrations`` directory are skipped: Django generates them, they import
only Django and the app's models by string, and they are not part of the layout.

Used by tests/test_import_graph.py and tests/test_import_contracts.py (what each package says it
may import, from its ``__init__`` docstring).
"""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SKIPPED_DIRS = frozenset({"migrations", "__pycache__"})


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``root/<package>`` (migrations skipped).

    A package's ``__init__.py`` is named after the package (``pkg.sub``, not ``pkg.sub.__init__``).
    """
    modules: dict[str, Path] = {}
    for package in packages:
        base = root / package
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(root)
            if SKIPPED_DIRS.intersection(rel.parts[:-1]):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(dotted: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``dotted`` that is one of ``modules``, or None (outside our packages)."""
    parts = dotted.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    """The absolute module an ``ImportFrom`` reads from; None when a relative import climbs too high."""
    if node.level == 0:
        return node.module
    package = module.split(".") if is_package else module.split(".")[:-1]
    up = node.level - 1
    if up > len(package) - 1:
        return None
    base = package[: len(package) - up]
    if node.module:
        base = [*base, *node.module.split(".")]
    return ".".join(base)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """The edges from ``module`` (source at ``path``) to other entries of ``modules``, in source order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []
    for node in ast.walk(tree):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_resolve(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, module, is_package)
            if base is None:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else _resolve(base, modules))
        for target in targets:
            if target is not None:
                edges.append(Edge(module, target, path, node.lineno))
    edges.sort(key=lambda e: (e.line, e.target))
    return edges


def import_graph(root: Path, packages: Iterable[str]) -> tuple[dict[str, set[str]], list[Edge]]:
    """``(graph, edges)``: module -> the modules it imports, and every import behind those arrows."""
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    edges: list[Edge] = []
    for name, path in modules.items():
        for edge in imports_of(name, path, modules):
            graph[name].add(edge.target)
            edges.append(edge)
    return graph, edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _shortest_path(graph: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list[str] | None:
    """Breadth-first shortest path ``start .. goal`` inside ``within`` (both ends included)."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for succ in sorted(graph.get(node, ())):
            if succ in within and succ not in previous:
                previous[succ] = node
                queue.append(succ)
    return None


def _rotate(cycle: list[str]) -> tuple[str, ...]:
    """A cycle (without the repeated first node) started at its smallest member."""
    start = cycle.index(min(cycle))
    return tuple(cycle[start:] + cycle[:start])


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Cycles that together cover every edge that lies on a cycle.

    A self-import is the cycle ``(a,)``. Inside each strongly connected component, every edge
    ``a -> b`` yields the shortest cycle through it (``a -> b -> ... -> a``); duplicates are
    dropped. So a component with a chord shows up as more than one chain, each a circle a
    developer can follow and cut.
    """
    found: list[tuple[str, ...]] = []
    for node in sorted(graph):
        if node in graph[node]:
            found.append((node,))
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        seen: set[tuple[str, ...]] = set()
        for source in component:
            for target in sorted(graph[source] & members):
                if target == source:
                    continue
                back = _shortest_path(graph, target, source, members)
                assert back is not None, "an edge inside a component always closes a cycle"
                cycle = _rotate([source, *back[:-1]])
                if cycle not in seen:
                    seen.add(cycle)
                    found.append(cycle)
    return found


def chain(cycle: tuple[str, ...]) -> str:
    """``a -> b -> c -> a``."""
    return " -> ".join([*cycle, cycle[0]])


def describe(cycle: tuple[str, ...], edges: list[Edge], root: Path) -> str:
    """The chain, then where each of its arrows is written (file:line), for the failure message."""
    lines = [chain(cycle)]
    for source, target in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        where = dict.fromkeys(
            f"{e.path.relative_to(root)}:{e.line}" for e in edges if e.source == source and e.target == target
        )
        lines.append(f"    {source} -> {target}: {', '.join(where)}")
    return "\n".join(lines)


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def top_level_modules(package_dir: Path) -> list[str]:
    """The .py files directly in ``package_dir``, ``__init__.py`` included, sorted."""
    return sorted(p.name for p in package_dir.glob("*.py"))


def oversized(modules: dict[str, Path], limit: int) -> list[tuple[str, int]]:
    """``(module, lines)`` for every module longer than ``limit`` lines, longest first."""
    counts = [(name, line_count(path)) for name, path in modules.items()]
    return sorted(((n, c) for n, c in counts if c > limit), key=lambda nc: (-nc[1], nc[0]))


# -- what each package says it may import ---------------------------------------------------

_MAY_IMPORT = re.compile(r"may import", re.IGNORECASE)
_DOTTED = re.compile(r"\b((?:passthrough|webui)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def packages_of(modules: dict[str, Path]) -> list[str]:
    """The packages one level below each top package (``passthrough.pci``, ``webui.jobs``)."""
    return sorted(name for name, path in modules.items() if path.name == "__init__.py" and name.count(".") == 1)


def owner(module: str, packages: Iterable[str]) -> str:
    """The package ``module`` belongs to, or the module itself when it sits at the top (``passthrough.host``)."""
    two = ".".join(module.split(".")[:2])
    return two if two in set(packages) else module


def declared_imports(init: Path) -> set[str] | None:
    """The modules and packages a package's ``__init__`` docstring says it may import.

    Read from the paragraph that says "may import" (case ignored): every dotted
    ``passthrough.…`` or ``webui.…`` name in it. None when the docstring has no such
    paragraph; an empty set when it names nothing (a package that imports nothing of ours).
    """
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    paragraphs = [p for p in re.split(r"\n\s*\n", docstring) if _MAY_IMPORT.search(p)]
    if not paragraphs:
        return None
    return {name for paragraph in paragraphs for name in _DOTTED.findall(paragraph)}


def undeclared(edges: list[Edge], modules: dict[str, Path]) -> dict[str, list[Edge]]:
    """Per package: the imports leaving it that its ``__init__`` does not declare (missing declaration: all)."""
    packages = packages_of(modules)
    found: dict[str, list[Edge]] = {}
    for package in packages:
        allowed = declared_imports(modules[package]) or set()
        for edge in edges:
            if owner(edge.source, packages) != package or owner(edge.target, packages) == package:
                continue
            if not any(edge.target == name or edge.target.startswith(name + ".") for name in allowed):
                found.setdefault(package, []).append(edge)
    return found


def package_graph(graph: dict[str, set[str]], packages: Iterable[str]) -> dict[str, set[str]]:
    """The module graph folded onto packages (top-level modules stay themselves)."""
    names = list(packages)
    folded: dict[str, set[str]] = {}
    for source, targets in graph.items():
        mine = owner(source, names)
        folded.setdefault(mine, set())
        folded[mine].update(t for t in (owner(target, names) for target in targets) if t != mine)
    return folded
