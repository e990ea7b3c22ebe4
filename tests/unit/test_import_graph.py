"""The ``proxy`` import graph: every module imports alone, and no two modules import
each other, directly or through others.

The graph is read from the source (``ast``), not from ``sys.modules``: an edge is a
module-level import, including one in ``if``/``try`` at module level, but not one under
``if TYPE_CHECKING:`` (never run) nor inside a function (run late, after every module
has loaded). Importing ``proxy.a.b`` first runs ``proxy/a/__init__.py``, so a module
also depends on its package's ``__init__``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "proxy"


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def _imported(tree: ast.Module, package: str) -> set[str]:
    """Every dotted name the module-level code imports (and each ``from`` name's
    candidate submodule), with relative imports made absolute."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If):
            if not _type_checking(node):
                pending += node.body
            pending += node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        imported = _imported(ast.parse(path.read_text()), package)
        if not is_package:
            imported.add(package)
        for dotted in imported:
            parts = dotted.split(".")
            # proxy.a.b imports proxy.a first; "proxy" itself is only __version__.
            edges.update(
                ".".join(parts[:i])
                for i in range(2, len(parts) + 1)
                if ".".join(parts[:i]) in files
            )
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        if start in done:
            continue
        path.append(start)
        on_path.add(start)
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = todo.pop()
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                stack.append((nxt, sorted(graph[nxt])))
                path.append(nxt)
                on_path.add(nxt)
    return None


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest import chain of an acyclic graph (module first, leaf last)."""
    memo: dict[str, list[str]] = {}

    def chain(node: str) -> list[str]:
        if node not in memo:
            tails = [chain(dep) for dep in sorted(graph[node])]
            memo[node] = [node, *max(tails, key=len, default=[])]
        return memo[node]

    return max((chain(node) for node in sorted(graph)), key=len)


def test_the_graph_sees_the_edges_that_matter() -> None:
    graph = import_graph()
    # A package import, a from-import of a submodule, and the implicit parent package.
    assert "proxy.providers.registry" in graph["proxy.config"]
    assert "proxy.providers" in graph["proxy.providers.openai"]
    assert "proxy.credentials" in graph["proxy.upstream"]
    # TYPE_CHECKING imports are not edges.
    assert "proxy.upstream" not in graph["proxy.providers.base"]


def test_find_cycle_reports_the_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert longest_chain({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == [
        "a",
        "b",
        "c",
    ]


def test_no_import_cycles_among_proxy_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_leaf_modules_import_nothing_of_ours() -> None:
    graph = import_graph()
    for leaf in ("proxy.credentials", "proxy.config_base", "proxy.providers"):
        assert graph[leaf] == set(), leaf


# Each module in its own fresh interpreter: an import that only works because some
# other module happened to load first (the old proxy.upstream cycle) fails here.
# The parent first imports the third-party packages ours use (never a module of ours):
# each child then loads only proxy's modules, which is what the test is about, and the
# test no longer nears its timeout on a loaded machine.
IMPORT_ALONE = """
import importlib, os, sys
names = sys.argv[1:]
third = sorted({n for n in os.environ["THIRD_PARTY"].split(",") if n})
for dep in third:
    try:
        importlib.import_module(dep)
    except Exception:
        pass  # an optional extra: its importer reports it below
assert not any(m == "proxy" or m.startswith("proxy.") for m in sys.modules), "ours"
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="uses os.fork")
def test_every_proxy_module_imports_alone() -> None:
    names = sorted(module_files())
    # One interpreter that has imported nothing of ours forks a child per module: as
    # fresh as a new interpreter for proxy's modules, at a fraction of the start-up.
    third: set[str] = set()
    for path in module_files().values():
        for name in _imported(ast.parse(path.read_text()), ""):
            top = name.split(".")[0]
            if top and top != "proxy" and top not in sys.stdlib_module_names:
                third.add(top)
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALONE, *names],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "THIRD_PARTY": ",".join(sorted(third))},
    )
    assert out.returncode == 0, out.stdout + out.stderr
