"""The import graph of the fedkit package: no cycle, and every arrow points down the layers of DESIGN.md.

The graph is read with ``ast`` from every module's source: imports at the top, inside functions
(the lazy ones) and under ``if TYPE_CHECKING:`` all count, because a cycle through a lazy or
type-only import is still two modules that cannot be understood (or moved) one without the other.
``from fedkit.a import b`` is an arrow to ``fedkit.a.b`` when that is a module, else to
``fedkit.a``. Importing a submodule runs its parent packages' ``__init__`` too; that implicit arrow
is not counted (it would tie every module to ``fedkit/__init__.py``, which only re-exports names
lazily).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fedkit"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "leaves",
        (
            "fedkit._version",
            "fedkit.errors",
            "fedkit._validation",
            "fedkit.seeding",
            "fedkit.metrics",
            "fedkit.evalstats",
            "fedkit.intervals",
            "fedkit._optional",
            "fedkit.paths",
            "fedkit.progress",
            "fedkit.architectures",
            "fedkit.training",
            "fedkit.result",
        ),
    ),
    ("data, strategies, models", ("fedkit.data", "fedkit.strategies", "fedkit.models")),
    ("run configuration", ("fedkit.config", "fedkit.presets")),
    ("core", ("fedkit.engines", "fedkit.privacy", "fedkit.tracking", "fedkit.runner", "fedkit.stacking")),
    ("deployments", ("fedkit.remote",)),
    ("facade", ("fedkit.api", "fedkit.sweeps")),
    (
        "edges",
        (
            "fedkit.cli",
            "fedkit.__main__",
            "fedkit.widgets",
            "fedkit.reports",
            "fedkit._kernel_startup",
            "fedkit.plots",
            "fedkit.explore",
            "fedkit.comparison",
            "fedkit.tradeoff",
        ),
    ),
)
"""Bottom to top; a module may import its own layer and the ones below. Prefixes cover subpackages."""

NAMESPACE = "fedkit"
"""``fedkit/__init__.py``: the public namespace re-exporting names from every layer (lazily); in no layer,
but in the cycle check."""

CORE = ("config", "data", "strategies", "engines", "runner", "tracking", "training", "metrics", "result")
CORE += ("errors", "seeding", "architectures", "privacy", "models", "presets", "paths", "progress", "_validation")
CORE += ("stacking",)
EDGES = ("remote", "widgets", "reports", "cli", "plots", "explore", "comparison", "_kernel_startup", "__main__", "api")
EDGES += ("sweeps", "tradeoff")


def module_name(path: Path) -> str:
    """``fedkit/engines/base.py`` -> ``fedkit.engines.base``; a package is named by its ``__init__.py``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The fedkit modules ``path`` imports anywhere in its source."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    """Every module of the package and the fedkit modules it imports."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first, in sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest prefix that covers ``module``."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def _under(module: str, names: tuple[str, ...]) -> bool:
    return any(module == f"fedkit.{n}" or module.startswith(f"fedkit.{n}.") for n in names)


GRAPH = import_graph()


def test_the_graph_is_read_from_the_source() -> None:
    assert {"fedkit.config", "fedkit.data.silos", "fedkit.engines.base"} <= GRAPH["fedkit.runner"]
    assert "fedkit.remote.submit" in GRAPH["fedkit.api"]  # a lazy import, inside run()
    assert "fedkit.config" in GRAPH["fedkit.remote.server"]  # an import under TYPE_CHECKING
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_has_a_layer() -> None:
    lost = sorted(m for m in GRAPH if m != NAMESPACE and layer_of(m) is None)
    assert not lost, f"{lost} are in no layer: add each to LAYERS in tests/test_layers.py (see DESIGN.md's layers)"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != NAMESPACE))
def test_every_arrow_points_down(module: str) -> None:
    own = layer_of(module)
    up = {
        m: LAYERS[layer][0]
        for m in GRAPH[module]
        if m != NAMESPACE and (layer := layer_of(m)) is not None and own is not None and layer > own
    }
    assert not up, f"{module} ({LAYERS[own or 0][0]}) imports {up}, above it; move the shared name down a layer"


def test_the_core_never_imports_an_edge() -> None:
    wrong = sorted(
        f"{m} -> {target}"
        for m, targets in GRAPH.items()
        if _under(m, CORE)
        for target in targets
        if _under(target, EDGES) or target == NAMESPACE
    )
    assert not wrong, "the core imports the edges: " + "; ".join(wrong)
