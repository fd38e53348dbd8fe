"""Dependencies point the way a frame flows, and no module imports itself in a circle.

    shared                         the contract: imports nothing of the project
    edge_client, cloud_service     the two sides: shared only
    models                         training and export: shared only
    evaluation                     measures the real pipeline: shared, models, edge_client,
                                   cloud_service
    bench, scripts                 programs: anything but tests
    tests                          anything

Every import counts, module-level or inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "edge_client", "cloud_service", "models", "evaluation", "bench", "scripts")
ALLOWED = {
    "shared": {"shared"},
    "edge_client": {"shared", "edge_client"},
    "cloud_service": {"shared", "cloud_service"},
    "models": {"shared", "models"},
    "evaluation": {"shared", "models", "edge_client", "cloud_service", "evaluation"},
    "bench": set(PACKAGES) - {"scripts"},
    "scripts": set(PACKAGES) - {"bench"},
}


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (as dotted names)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
                ".__init__"
            )
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
                    names |= {f"{node.module}.{a.name}" for a in node.names}
            graph[module] = {n for n in names if n.split(".")[0] in PACKAGES + ("tests",)}
    return graph


def test_dependencies_point_one_way():
    wrong = [
        f"{module} imports {name}"
        for module, names in project_imports().items()
        for name in names
        if name.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = project_imports()
    modules = set(graph)
    edges = {m: {n for n in names if n in modules and n != m} for m, names in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in edges[m]:
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
