"""No import cycles among tuitune's modules (issue 21 item 4).

The graph is read statically with ``ast`` from every module under ``tuitune/``: an edge A -> B for each
``import tuitune.x`` / ``from tuitune.x import y`` / relative ``from .x import y`` in A that names module B
(``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``), as
import-linter's graph reads them: an import of ``a.b.c`` is an edge to ``a.b.c``, not to the packages
above it (Python has those in ``sys.modules`` before it runs ``a.b.c``).

Two graphs, both must be acyclic:

* module level: every import that runs when the module is imported (top level, class bodies,
  module-level ``if``/``try``), but not those under ``if TYPE_CHECKING:``, which never run;
* every import, function-level ones counted too: an import inside a function runs later, so a cycle
  there does not break importing, but it is the same tangle (two modules each needing the other) hidden
  from the reader. The tree has none, and this keeps it so.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = "tuitune"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module_level: bool):
    """The import statements of a module: those that run on import, or (``module_level=False``) all
    but the TYPE_CHECKING ones."""
    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and module_level:
                continue
            elif isinstance(child, ast.If) and _is_type_checking(child):
                yield from (n for c in child.orelse for n in walk(ast.Module(body=[c], type_ignores=[])))
            else:
                yield from walk(child)
    yield from walk(tree)


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_pkg: bool, modules: dict) -> set[str]:
    """The tuitune modules an import statement in module ``name`` names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        pkg = ".".join(base + ([node.module] if node.module else []))
    else:
        pkg = node.module or ""
    out = set()
    for alias in node.names:
        sub = f"{pkg}.{alias.name}"
        if sub in modules:
            out.add(sub)
        elif pkg in modules:
            out.add(pkg)
    return out


def import_graph(module_level: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = set()
        for node in _imports(tree, module_level):
            edges |= _targets(node, name, path.name == "__init__.py", modules)
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each shown as one cycle
    through its modules, shortest first, so the failure names the loop to cut."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    import sys
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in comps:
        start = min(comp)
        cycles.append(_shortest_cycle(graph, start, comp))
    return sorted(cycles, key=lambda c: (len(c), c))


def _shortest_cycle(graph, start, comp) -> list[str]:
    """Breadth-first from ``start`` back to itself inside its component."""
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return [start]


def _report(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_reads_the_tree():
    """The walk sees the package: the engine's entry point imports its commands, a relative import resolves."""
    graph = import_graph(module_level=True)
    assert "tuitune.cli" in graph and "tuitune.errors" in graph
    assert "tuitune.errors" in graph["tuitune.data.io"]


def test_the_checker_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_level_import_cycles():
    cycles = find_cycles(import_graph(module_level=True))
    assert not cycles, "module-level import cycles in tuitune/:\n" + _report(cycles)


def test_no_import_cycles_counting_imports_inside_functions():
    cycles = find_cycles(import_graph(module_level=False))
    assert not cycles, "import cycles in tuitune/ (imports inside functions counted):\n" + _report(cycles)
