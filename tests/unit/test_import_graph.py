"""Imports flow one way: no module-level import cycle, and the layers stay apart.

The graph is read from the source with ``ast`` (nothing is imported). An edge is every module an
``import`` statement names, wherever the statement is (a lazy import inside a function still ties
two modules together); the package ``__init__`` Python runs on the way to a submodule is not an
edge of its own. Layers:

* core (``canvas_stream.records``, ``settings``, ``errors``, ``formats``, ``json_codec``): stdlib,
  third-party and each other only;
* ``ingest`` and ``processors`` never import each other;
* the CLI modules (``canvas_stream.cli*``, ``canvas_stream.dev``) are imported by the CLI only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("canvas_stream", "ingest", "processors", "migrations")
CORE = frozenset({"canvas_stream.records", "canvas_stream.settings", "canvas_stream.errors", "canvas_stream.formats",
                  "canvas_stream.json_codec"})
CLI = frozenset({"canvas_stream.cli", "canvas_stream.cli_ops", "canvas_stream.cli_lti", "canvas_stream.dev"})

Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The project module ``name`` refers to (its longest known prefix), None outside the project."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Mapping[str, Path]) -> set[str]:
    """Project modules one import statement names: ``from pkg import sub`` names pkg.sub,
    ``from mod import func`` names mod; relative imports are anchored at ``module``'s package."""
    if isinstance(node, ast.Import):
        found = {_resolve(alias.name, modules) for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        found = set()
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in modules else _resolve(base, modules))
    return {t for t in found if t is not None and t != module}


def import_graph(modules: Mapping[str, Path]) -> Graph:
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name] |= _targets(node, name, is_package, modules)
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (iterative DFS, colours white/grey/black)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph.get(root, ())))]
        path = [root]
        state[root] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop(0)
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(project_modules())


def _offences(graph: Graph, importers: Iterable[str], forbidden) -> list[str]:
    return sorted(f"{m} -> {t}" for m in importers for t in graph[m] if forbidden(t))


def test_the_graph_is_read(graph: Graph) -> None:
    assert len(graph) > 40
    assert {"ingest.verify", "ingest.jwks", "ingest.http"} <= graph["ingest.app"] | graph["ingest.jwks"]
    assert "processors.warehouse.schema" in graph["processors.warehouse.tables"]
    assert "processors.normalize.model" in graph["processors.normalize.notices"]  # relative import
    assert graph["processors.warehouse.writer"] >= {"processors.warehouse.tables"}  # from . import tables
    assert "processors.warehouse" not in graph["processors.warehouse.writer"]
    assert "processors.normalize" in graph["processors.batch"]  # from package import function


def test_no_import_cycle(graph: Graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_core_imports_only_core(graph: Graph) -> None:
    assert graph.keys() >= CORE
    assert _offences(graph, CORE, lambda t: t not in CORE) == []


def test_ingest_and_processors_stay_apart(graph: Graph) -> None:
    ingest = [m for m in graph if m.split(".")[0] == "ingest"]
    processors = [m for m in graph if m.split(".")[0] == "processors"]
    assert _offences(graph, ingest, lambda t: t.split(".")[0] == "processors") == []
    assert _offences(graph, processors, lambda t: t.split(".")[0] == "ingest") == []


def test_only_the_cli_imports_the_cli(graph: Graph) -> None:
    assert graph.keys() >= CLI
    assert _offences(graph, [m for m in graph if m not in CLI], lambda t: t in CLI) == []


def test_cycle_finder_reports_the_path() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None
    assert find_cycle({"x": {"x"}}) == ["x", "x"]
