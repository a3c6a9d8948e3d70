"""The shape of passthrough/ and webui/ (issue 11): no import cycle, few top-level modules, short files.

The import graph is read from the source (tests/import_graph.py, ``ast`` only, nothing is
imported): imports at module level, inside functions and under ``if TYPE_CHECKING:`` all
count, since a type-only import is the same dependency for a reader. Each import points at
the most specific module file it names; imports from outside the two packages are ignored;
Django migrations are skipped.

The first half checks the real tree; the second half proves the detector on small packages
written to tmp_path, so a green run above means something.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.import_graph import (
    Edge,
    chain,
    cycles,
    describe,
    import_graph,
    module_files,
    oversized,
    strongly_connected,
    top_level_modules,
)

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("passthrough", "webui")
# .py files directly in passthrough/, __init__.py included (issue 11: host, errors, cli, ...).
MAX_TOP_LEVEL_MODULES = 8
MAX_LINES = 400


# -- the real tree -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_graph() -> tuple[dict[str, set[str]], list[Edge]]:
    """Parsed once for the module: reading ~170 files is most of this file's run time."""
    return import_graph(REPO, PACKAGES)


def test_no_import_cycles(real_graph: tuple[dict[str, set[str]], list[Edge]]) -> None:
    graph, edges = real_graph
    found = cycles(graph)
    report = "\n".join(describe(c, edges, REPO) for c in found)
    if found:
        pytest.fail(f"{len(found)} import cycle(s); cut one arrow of each:\n{report}", pytrace=False)


def test_at_most_eight_modules_directly_in_passthrough() -> None:
    top = top_level_modules(REPO / "passthrough")
    if len(top) > MAX_TOP_LEVEL_MODULES:
        pytest.fail(
            f"{len(top)} .py files directly in passthrough/ (__init__.py counted), "
            f"at most {MAX_TOP_LEVEL_MODULES}: {', '.join(top)}",
            pytrace=False,
        )


def test_no_module_over_400_lines() -> None:
    # module_files skips migrations/: Django writes those, they are not the layout.
    offenders = oversized(module_files(REPO, PACKAGES), MAX_LINES)
    listing = "\n".join(f"    {name}: {count} lines" for name, count in offenders)
    if offenders:
        pytest.fail(f"modules over {MAX_LINES} lines:\n{listing}", pytrace=False)


def test_the_graph_sees_the_real_tree(real_graph: tuple[dict[str, set[str]], list[Edge]]) -> None:
    """Guards against a detector that silently reads nothing (wrong root, wrong package names)."""
    graph, edges = real_graph
    assert "passthrough.host" in graph and "webui.settings" in graph
    assert not any(".migrations." in name for name in graph)
    assert len(edges) > 100
    assert any(e.target == "passthrough.host" for e in edges)


# -- the detector, on synthetic trees ------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def found_chains(root: Path, packages: tuple[str, ...] = ("pkg",)) -> list[str]:
    graph, _ = import_graph(root, packages)
    return [chain(c) for c in cycles(graph)]


def test_acyclic_tree_has_no_cycles(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/model.py": "import os\nfrom dataclasses import dataclass\n",
            "pkg/scan.py": "from pkg.model import Thing\n",
            "pkg/verdict.py": "from pkg import model\nfrom pkg.scan import scan\n",
        },
    )
    graph, _ = import_graph(tmp_path, ("pkg",))
    assert graph == {
        "pkg": set(),
        "pkg.model": set(),
        "pkg.scan": {"pkg.model"},
        "pkg.verdict": {"pkg.model", "pkg.scan"},
    }
    assert found_chains(tmp_path) == []


def test_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import g\n",
            "pkg/b.py": """\
                def g():
                    from pkg.a import f
                    return f
            """,
        },
    )
    assert found_chains(tmp_path) == ["pkg.a -> pkg.b -> pkg.a"]


def test_cycle_through_a_type_checking_import(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/inventory.py": "import pkg.isolation\n",
            "pkg/isolation.py": "from pkg.hostcritical import facts\n",
            "pkg/hostcritical.py": """\
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from pkg.inventory import Device
            """,
        },
    )
    assert found_chains(tmp_path) == ["pkg.hostcritical -> pkg.inventory -> pkg.isolation -> pkg.hostcritical"]


def test_cycle_through_relative_imports(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/top.py": "from .sub.leaf import x\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/leaf.py": "from ..top import y\n",
        },
    )
    assert found_chains(tmp_path) == ["pkg.sub.leaf -> pkg.top -> pkg.sub.leaf"]


def test_relative_import_from_a_package_init(tmp_path: Path) -> None:
    # In pkg/sub/__init__.py, "from . import leaf" is pkg.sub.leaf; "from .. import top" is pkg.top.
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/top.py": "import pkg.sub\n",
            "pkg/sub/__init__.py": "from . import leaf\nfrom .. import top\n",
            "pkg/sub/leaf.py": "",
        },
    )
    graph, _ = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub"] == {"pkg.sub.leaf", "pkg.top"}
    assert found_chains(tmp_path) == ["pkg.sub -> pkg.top -> pkg.sub"]


def test_from_package_import_submodule_or_name(tmp_path: Path) -> None:
    # "from pkg.capture import files" is the submodule; "from pkg.capture import Summary" is the __init__.
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/capture/__init__.py": "Summary = object\n",
            "pkg/capture/files.py": "from pkg.capture import Summary\n",
            "pkg/recorder.py": "from pkg.capture import files\n",
        },
    )
    graph, _ = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.recorder"] == {"pkg.capture.files"}
    assert graph["pkg.capture.files"] == {"pkg.capture"}
    assert found_chains(tmp_path) == []

    # ... and once the __init__ imports its submodule back, that is a cycle.
    write(tmp_path, {"pkg/capture/__init__.py": "from pkg.capture.files import write\nSummary = object\n"})
    assert found_chains(tmp_path) == ["pkg.capture -> pkg.capture.files -> pkg.capture"]


def test_import_resolves_to_the_most_specific_existing_module(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/ops/__init__.py": "",
            "pkg/ops/bind.py": "",
            "pkg/user.py": "import pkg.ops.bind\nimport pkg.ops.missing\nimport pkg\nimport other.thing\n",
        },
    )
    graph, edges = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.user"] == {"pkg.ops.bind", "pkg.ops", "pkg"}
    assert [(e.target, e.line) for e in edges if e.source == "pkg.user"] == [
        ("pkg.ops.bind", 1),
        ("pkg.ops", 2),
        ("pkg", 3),
    ]


def test_self_import_is_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from pkg import a\n"})
    assert found_chains(tmp_path) == ["pkg.a -> pkg.a"]


def test_a_component_with_a_chord_shows_every_circle(tmp_path: Path) -> None:
    # The webui.jobs shape: runner -> tasks -> runner, service -> tasks, runner -> service.
    write(
        tmp_path,
        {
            "jobs/__init__.py": "",
            "jobs/runner.py": "from jobs import tasks\nfrom jobs.service import start\n",
            "jobs/tasks.py": "def run():\n    from jobs.runner import go\n",
            "jobs/service.py": "from jobs.tasks import run\n",
        },
    )
    graph, _ = import_graph(tmp_path, ("jobs",))
    assert strongly_connected(graph) == [["jobs"], ["jobs.runner", "jobs.service", "jobs.tasks"]]
    assert found_chains(tmp_path, ("jobs",)) == [
        "jobs.runner -> jobs.service -> jobs.tasks -> jobs.runner",
        "jobs.runner -> jobs.tasks -> jobs.runner",
    ]


def test_cycles_across_two_packages_and_outside_imports_ignored(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/host.py": "import os\nimport django.db\nfrom elsewhere import web\n",
            "pkg/model.py": "from web.views import page\n",
            "web/__init__.py": "",
            "web/views.py": "from pkg.model import Thing\n",
            "elsewhere/__init__.py": "import pkg.host\n",
        },
    )
    graph, _ = import_graph(tmp_path, ("pkg", "web"))
    assert "elsewhere" not in graph
    assert graph["pkg.host"] == set()
    assert found_chains(tmp_path, ("pkg", "web")) == ["pkg.model -> web.views -> pkg.model"]


def test_migrations_are_skipped(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "web/__init__.py": "",
            "web/models.py": "",
            "web/migrations/__init__.py": "",
            "web/migrations/0001_initial.py": "from web import models\n" + "x = 1\n" * 500,
        },
    )
    modules = module_files(tmp_path, ("web",))
    assert sorted(modules) == ["web", "web.models"]
    assert oversized(modules, MAX_LINES) == []


def test_describe_names_the_file_and_line_of_each_arrow(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import os\nfrom pkg.b import g\n",
            "pkg/b.py": "def g():\n    import pkg.a\n",
        },
    )
    graph, edges = import_graph(tmp_path, ("pkg",))
    (cycle,) = cycles(graph)
    assert describe(cycle, edges, tmp_path).splitlines() == [
        "pkg.a -> pkg.b -> pkg.a",
        "    pkg.a -> pkg.b: pkg/a.py:2",
        "    pkg.b -> pkg.a: pkg/b.py:2",
    ]


def test_shape_checks_count_files_and_lines(tmp_path: Path) -> None:
    files = {f"pkg/m{i}.py": "x = 1\n" * (MAX_LINES + i - 1) for i in range(3)}
    files["pkg/__init__.py"] = ""
    files["pkg/sub/__init__.py"] = ""
    files["pkg/sub/deep.py"] = "y = 2\n" * (MAX_LINES + 10)
    write(tmp_path, files)
    # __init__.py counts; modules in subpackages do not.
    assert top_level_modules(tmp_path / "pkg") == ["__init__.py", "m0.py", "m1.py", "m2.py"]
    # m0 has 399 lines, m1 exactly 400 (allowed), m2 401.
    assert oversized(module_files(tmp_path, ("pkg",)), MAX_LINES) == [("pkg.sub.deep", 410), ("pkg.m2", 401)]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from . import b\n", {"pkg.b"}),
        ("from .b import g\n", {"pkg.b"}),
        ("from . import nothing_here\n", {"pkg"}),
        ("from ... import too_high\n", set()),
        ("try:\n    import pkg.b\nexcept ImportError:\n    pass\n", {"pkg.b"}),
        ("class C:\n    def m(self):\n        from pkg import b\n", {"pkg.b"}),
    ],
)
def test_forms_of_import(tmp_path: Path, source: str, expected: set[str]) -> None:
    write(tmp_path, {"pkg/__init__.py": "", "pkg/b.py": "", "pkg/a.py": source})
    graph, _ = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == expected
