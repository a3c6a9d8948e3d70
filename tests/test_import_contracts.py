"""Each package says which packages it may import, and the source keeps to it (issue 11).

Every package one level down in ``passthrough/`` and ``webui/`` says in its ``__init__``
docstring, in a paragraph with the words "may import", which of our modules and packages
it imports. The import graph read from the source (tests/import_graph.py: function-level
and type-only imports count) must stay inside that list, so the docstring a newcomer reads
is the shape of the code. The packages of ``passthrough/`` also import one way as wholes,
not only module by module, which is what the README's layout picture draws.

The second half proves the checks on small packages written to tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.import_graph import (
    Edge,
    chain,
    cycles,
    declared_imports,
    import_graph,
    module_files,
    package_graph,
    packages_of,
    undeclared,
)
from tests.test_import_graph import write

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("passthrough", "webui")


@pytest.fixture(scope="module")
def real() -> tuple[dict[str, Path], dict[str, set[str]], list[Edge]]:
    modules = module_files(REPO, PACKAGES)
    graph, edges = import_graph(REPO, PACKAGES)
    return modules, graph, edges


def test_every_package_says_what_it_may_import(real: tuple[dict[str, Path], dict[str, set[str]], list[Edge]]) -> None:
    modules, _, _ = real
    silent = [name for name in packages_of(modules) if declared_imports(modules[name]) is None]
    assert len(packages_of(modules)) >= 15  # the 11 of passthrough/ and the 5 apps of webui/
    if silent:
        pytest.fail(f"no 'May import:' paragraph in the __init__ docstring of: {', '.join(silent)}", pytrace=False)


def test_packages_import_only_what_they_declare(real: tuple[dict[str, Path], dict[str, set[str]], list[Edge]]) -> None:
    modules, _, edges = real
    found = undeclared(edges, modules)
    if found:
        lines = [
            f"  {package}: {edge.source} imports {edge.target} ({edge.path}:{edge.line})"
            for package, offending in sorted(found.items())
            for edge in sorted(set(offending), key=lambda e: (e.source, e.line, e.target))
        ]
        pytest.fail(
            "imports their package's __init__ does not declare (declare them with the reason, or cut them):\n"
            + "\n".join(lines),
            pytrace=False,
        )


def test_passthrough_packages_import_one_way(real: tuple[dict[str, Path], dict[str, set[str]], list[Edge]]) -> None:
    modules, graph, _ = real
    names = [name for name in packages_of(modules) if name.startswith("passthrough.")]
    inside = {
        source: targets for source, targets in package_graph(graph, names).items() if source.startswith("passthrough")
    }
    found = cycles({source: {t for t in targets if t.startswith("passthrough")} for source, targets in inside.items()})
    assert "passthrough.pci" in inside and "passthrough.host" in inside["passthrough.pci"]
    if found:
        pytest.fail(
            "packages of passthrough/ importing each other: " + "; ".join(chain(c) for c in found), pytrace=False
        )


# -- the checks, on synthetic trees --------------------------------------------------------


def test_declared_names_come_from_the_may_import_paragraph_only(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": '''\
                """Package a, which talks about ``passthrough.vms`` here without importing it.

                May import: ``passthrough.host``, :mod:`passthrough.pci.model` and
                webui.audit; never ``ops``.
                """
            ''',
            "pkg/b/__init__.py": '"""Package b says nothing about its imports."""\n',
            "pkg/c/__init__.py": '"""Package c.\n\nMay import: nothing of ours.\n"""\n',
        },
    )
    assert declared_imports(tmp_path / "pkg/a/__init__.py") == {
        "passthrough.host",
        "passthrough.pci.model",
        "webui.audit",
    }
    assert declared_imports(tmp_path / "pkg/b/__init__.py") is None
    assert declared_imports(tmp_path / "pkg/c/__init__.py") == set()


def test_an_undeclared_import_is_reported_with_its_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/host.py": "",
            "pkg/low/__init__.py": '"""Low.\n\nMay import: ``pkg.host``.\n"""\n',
            "pkg/low/model.py": "from pkg.host import HostTree\n",
            "pkg/high/__init__.py": '"""High.\n\nMay import: ``pkg.low.model``.\n"""\n',
            "pkg/high/scan.py": """\
                from pkg.low.model import Thing

                def later():
                    from pkg.low import other
                    import pkg.host
            """,
        },
    )
    modules = module_files(tmp_path, ("pkg",))
    graph, edges = import_graph(tmp_path, ("pkg",))
    # The checker only knows passthrough/webui names in docstrings; fold pkg in for the test.
    import tests.import_graph as ig

    original = ig._DOTTED
    try:
        ig._DOTTED = ig.re.compile(r"\b(pkg(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
        found = undeclared(edges, modules)
    finally:
        ig._DOTTED = original
    assert sorted((e.source, e.target, e.line) for e in found["pkg.high"]) == [
        ("pkg.high.scan", "pkg.host", 5),
        ("pkg.high.scan", "pkg.low", 4),
    ]
    assert "pkg.low" not in found


def test_a_cycle_between_packages_is_found_even_without_a_module_cycle(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "",
            "pkg/a/one.py": "from pkg.b.two import x\n",
            "pkg/a/three.py": "",
            "pkg/b/__init__.py": "",
            "pkg/b/two.py": "",
            "pkg/b/four.py": "from pkg.a.three import y\n",
        },
    )
    graph, _ = import_graph(tmp_path, ("pkg",))
    assert cycles(graph) == []
    folded = package_graph(graph, ["pkg.a", "pkg.b"])
    assert [chain(c) for c in cycles(folded)] == ["pkg.a -> pkg.b -> pkg.a"]
