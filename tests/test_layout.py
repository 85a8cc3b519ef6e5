"""Layout rules of the recshrink package, read from the source with ``ast`` (nothing is imported).

- No import cycle between recshrink modules, counting top-level and function-local imports
  (imports under ``if TYPE_CHECKING:`` never run and are left out).
- No function-local import of a recshrink module: a local import is only for a heavy optional
  third-party back end (onnxruntime, tensorrt, torch_pruning, ...).
- No module over :data:`MAX_LINES` lines unless :data:`LONG_MODULES` says why.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "recshrink"
MAX_LINES = 400

# Modules allowed over MAX_LINES: {module: reason}. Keep the reason concrete; an entry for a
# module that is gone or back under the limit fails the test, so the list cannot go stale.
LONG_MODULES: dict[str, str] = {
    "recshrink.recipe": "the recipe schema: one validated spec per recipe block, read in one "
                        "place (about 30 lines over, the search block's spec)",
    "recshrink.export.onnx": "one graph format end to end: the serving head, export, "
                             "validation against PyTorch and ORT scoring (48 lines over)",
    "recshrink.export.backends": "the one serving layer: every artifact kind opened on each of "
                                 "its backends (13 lines over, the ann backend)",
}


@dataclass(frozen=True)
class Edge:
    """One import statement from module ``src`` of module ``dst``."""

    src: str
    dst: str
    file: str  # path relative to the repository root
    line: int
    local: bool  # inside a function body

    def where(self) -> str:
        return f"{self.file}:{self.line}" + (" (function-local)" if self.local else "")


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by ``__init__``)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module):
    """``(node, local)`` for every import statement that can run, ``local`` inside a function."""

    def walk(node: ast.AST, local: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, local
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:  # the body runs only under a type checker
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), local)
            else:
                inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.Lambda))  # fmt: skip
                yield from walk(child, inner)

    yield from walk(tree, False)


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The recshrink modules an import statement of ``module`` names.

    ``import recshrink.a.b`` names ``recshrink.a.b``; ``from recshrink.a import b`` names
    ``recshrink.a.b`` when that is a module, else ``recshrink.a``. The parent packages that
    Python imports on the way (``recshrink``, ``recshrink.a``) are not counted.
    """
    known = modules()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [n for n in names if n in known]
    base = node.module or ""
    if node.level:  # relative import
        pkg = module.split(".")
        if not (known[module].name == "__init__.py"):
            pkg = pkg[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    if base != PACKAGE and not base.startswith(PACKAGE + "."):
        return []
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        target = sub if sub in known else base
        if target in known and target not in out:
            out.append(target)
    return out


@cache
def edges() -> tuple[Edge, ...]:
    out = []
    for module, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(SRC.parent).as_posix()
        for node, local in _imports(tree):
            for dst in _resolve(module, node):
                if dst != module:
                    out.append(Edge(module, dst, rel, node.lineno, local))
    return tuple(out)


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _shortest_cycle(start: str, graph: dict[str, list[str]], members: set[str]) -> list[str]:
    """The shortest import path ``start -> ... -> start`` inside one component."""
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for dst in graph[node]:
                if dst not in members:
                    continue
                if dst == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start]
                if dst not in prev:
                    prev[dst] = node
                    nxt.append(dst)
        frontier = nxt
    raise AssertionError("no cycle in a strongly connected component")


def import_cycles() -> list[str]:
    """The shortest cycle through each module that is in one, with the import lines."""
    graph: dict[str, list[str]] = {m: [] for m in modules()}
    first: dict[tuple[str, str], Edge] = {}
    for e in edges():
        if (e.src, e.dst) not in first:
            first[(e.src, e.dst)] = e
            graph[e.src].append(e.dst)
    out: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for comp in _strongly_connected(graph):
        for start in comp:
            cycle = _shortest_cycle(start, graph, set(comp))
            ring = cycle[:-1]
            i = ring.index(min(ring))
            key = tuple(ring[i:] + ring[:i])  # the same cycle from another start
            if key in seen:
                continue
            seen.add(key)
            cycle = [*key, key[0]]
            out.append(" -> ".join(cycle) + "  ["
                       + "; ".join(first[(a, b)].where() for a, b in zip(cycle, cycle[1:])) + "]")
    return out


def local_imports() -> list[str]:
    return [f"{e.where().removesuffix(' (function-local)')}: {e.src} imports {e.dst}"
            for e in edges() if e.local]  # fmt: skip


def long_modules() -> list[str]:
    out = []
    for module, path in modules().items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and module not in LONG_MODULES:
            out.append(f"{path.relative_to(SRC.parent).as_posix()}: {n} lines (> {MAX_LINES})")
    return out


def test_resolver_sees_known_imports() -> None:
    """The graph holds imports the rules depend on resolving (guards against a silent no-op)."""
    pairs = {(e.src, e.dst) for e in edges()}
    assert ("recshrink.data.loaders", "recshrink.data.kcore") in pairs  # from-import of a name
    assert ("recshrink.metrics", "recshrink.interest") in pairs
    assert ("recshrink.compress.prune", "recshrink.compress.prune_rnn") in pairs
    tree = ast.parse("from recshrink.data import loaders\nfrom . import parsing\n"
                     "from recshrink import __version__\nimport recshrink.data.kcore\n")  # fmt: skip
    got = [_resolve("recshrink.data.s3rec", n) for n, _ in _imports(tree)]
    assert got == [["recshrink.data.loaders"], ["recshrink.data.parsing"], ["recshrink"],
                   ["recshrink.data.kcore"]]  # fmt: skip
    local = ast.parse("def f():\n    from recshrink.metrics import rank_scores\n"
                      "if TYPE_CHECKING:\n    import recshrink.pipeline\n")  # fmt: skip
    assert [(n.lineno, lo) for n, lo in _imports(local)] == [(2, True)]
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": []}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _shortest_cycle("a", graph, {"a", "b", "c"}) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    cycles = import_cycles()
    assert not cycles, "import cycles between recshrink modules:\n  " + "\n  ".join(cycles)


def test_no_function_local_imports_of_recshrink() -> None:
    found = local_imports()
    assert not found, (
        "function-local imports of recshrink modules (allowed only for heavy optional "
        "third-party back ends):\n  " + "\n  ".join(found)
    )


def test_no_module_over_max_lines() -> None:
    found = long_modules()
    assert not found, (
        f"modules over {MAX_LINES} lines (split them, or add {{module: reason}} to "
        "LONG_MODULES in tests/test_layout.py):\n  " + "\n  ".join(found)
    )
    stale = []
    for module, reason in LONG_MODULES.items():
        path = modules().get(module)
        if path is None:
            stale.append(f"{module}: no such module")
        elif len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES:
            stale.append(f"{module}: now within {MAX_LINES} lines")
        elif not reason.strip():
            stale.append(f"{module}: no reason given")
    assert not stale, "stale LONG_MODULES entries:\n  " + "\n  ".join(stale)
