"""Report import cycles among edgekit's modules, function-level imports included.

Walks every ``edgekit/**/*.py`` with ``ast``, records each ``import`` / ``from ... import`` anywhere
in the file (module level, inside functions, under ``if TYPE_CHECKING``), resolves relative imports
and ``from pkg import submodule``, and prints every cycle of the module graph (one per strongly
connected component, with the shortest loop through it). A package's own ``__init__`` importing
its submodules is not a cycle: Python imports a package before its submodules.

    python tools/import_cycles.py [ROOT]      # ROOT: the folder holding edgekit/ (default: repo)

Exit status 1 when there is a cycle, 0 otherwise.
"""
from __future__ import annotations

import ast
import sys
from collections import deque
from pathlib import Path

PACKAGE = "edgekit"


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``root``."""
    result = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        result[".".join(parts)] = path
    return result


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` (file ``path``) imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import sub`` imports the submodule pkg.sub when there is one
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import a.b.c`` where c is a name in a.b
                target = target.rpartition(".")[0]
            # a package's __init__ importing its own submodules: Python imports it first anyway
            if target and target != name and not target.startswith(name + "."):
                found.add(target)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [_shortest_loop(edges, c) for c in sorted(components, key=min)]


def _shortest_loop(edges: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges[v] & component):
            if w == start:
                loop = [v]
                while loop[-1] != start:
                    loop.append(previous[loop[-1]])
                return [start] + loop[::-1][1:] + [start] if len(loop) > 1 else [start, v, start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    return sorted(component)


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    found = cycles(graph(root))
    for loop in found:
        print("import cycle: " + " -> ".join(loop))
    if not found:
        print(f"no import cycles among {len(modules(root))} modules of {root / PACKAGE}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
