"""Imports run one way: no import cycle among the modules of src/gatedrnn.

A static walk with ``ast`` over every import statement, including those inside functions (a
lazy import that calls back is still a circle: the custom-op files once imported their autograd
Function back, lazily, from the file that imported them). Only ``if TYPE_CHECKING:`` blocks are
skipped. ``from . import x`` is an edge to the module ``x`` when there is one, else to the
package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "gatedrnn"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / ROOT).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the gatedrnn modules it imports."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in mods else stem
                           for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import gatedrnn.engines.kernels.lstm.x` -> the module
                    t = t.rpartition(".")[0]
                if t and t != mod and t.split(".")[0] == ROOT:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_walk_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_walk_sees_kernel_imports() -> None:
    graph = import_graph()
    assert "gatedrnn.engines.kernels.fused" in graph["gatedrnn.engines.kernels.lstm"]
    assert "gatedrnn.engines.kernels.compiled" in graph["gatedrnn.engines.kernels.gru"]
    assert "gatedrnn.toolkit.sample" in graph["gatedrnn.cli"]  # a lazy import counts


def test_no_import_cycles_in_src() -> None:
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


# The floors, lowest first: a module may import its own floor and the ones below it, never one
# above (lazy imports count). The package itself (``gatedrnn/__init__.py``, the public API) imports
# the modules and the export floor, so it stands on the export floor: interop and the toolkit may
# ``import gatedrnn``, the core may not. ``__main__`` is the command line.
FLOORS = ("equations", "engines", "modules", "export", "interop", "toolkit", "cli")


def floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return FLOORS.index("export")
    return FLOORS.index("cli" if parts[1] == "__main__" else parts[1])


def test_every_module_is_on_a_floor() -> None:
    for module in import_graph():
        floor(module)  # ValueError names a folder the floors do not list


def test_no_import_from_a_higher_floor() -> None:
    up = sorted((m, t) for m, targets in import_graph().items() for t in targets
                if floor(t) > floor(m))
    assert up == [], f"imports from a higher floor: {up}"


def test_the_floor_check_sees_an_upward_import() -> None:
    assert floor("gatedrnn.export.graph") > floor("gatedrnn.modules.base")
    assert floor("gatedrnn.modules.base") < floor("gatedrnn") < floor("gatedrnn.interop.io")


def test_declared_engines_live_on_the_engine_floors() -> None:
    """Engines are named by path in the cell declarations and imported by name, which the walk
    cannot see: each must be on the equations or engines floor."""
    from gatedrnn.equations.kinds import CELLS

    for kind in CELLS.values():
        for path in kind.engines.values():
            module = path.partition(":")[0]
            assert floor(module) <= FLOORS.index("engines"), (kind.name, path)
