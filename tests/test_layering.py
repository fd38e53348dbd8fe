"""Dependencies point the way a frame flows, and no module imports itself in a circle.

    shared                         the contract: imports nothing of the project
    edge_client, cloud_service     the two sides: shared only
    models                         training and export: shared only
    evaluation                     measures the real pipeline: shared, models, edge_client,
                                   cloud_service
    bench, scripts                 programs: anything but tests
    tests                          anything

Every import counts, module-level or inside a function (a lazy import is still a dependency).

Entry points sit on top: a module that is a console script's (``[project.scripts]``, through
``shared/entrypoints.py``) or that runs as ``python -m`` / ``python FILE`` (an
``if __name__ == "__main__"`` guard) is imported by no other project module, only by tests. What
two programs share lives in a library module below both.
"""

from __future__ import annotations

import ast
import tomllib
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


def _runs_as_main(tree: ast.Module) -> bool:
    """Whether a module body holds ``if __name__ == "__main__":``."""
    for node in tree.body:
        test = node.test if isinstance(node, ast.If) else None
        if (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
        ):
            return True
    return False


def _script_modules() -> set[str]:
    """The modules whose ``main`` the console scripts run: a target in ``shared.entrypoints``
    stands for the module its ``_script(prog, MODULE, extras)`` names."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    launchers: dict[str, str] = {}
    for node in ast.parse((ROOT / "shared" / "entrypoints.py").read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and len(node.value.args) >= 2
            and isinstance(node.value.args[1], ast.Constant)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    launchers[target.id] = str(node.value.args[1].value)
    modules = set()
    for target in scripts.values():
        module, _, attr = target.partition(":")
        modules.add(launchers[attr] if module == "shared.entrypoints" else module)
    return modules


def entry_points() -> set[str]:
    """Every project module that is a program: a console script's, or one with a main guard."""
    found = _script_modules()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if _runs_as_main(ast.parse(path.read_text())):
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def test_entry_points_are_found():
    """The finder sees both kinds: the console scripts' modules and ``python -m`` programs."""
    found = entry_points()
    assert {"models.train", "models.train_reference", "models.export", "models.int8"} <= found
    assert {"edge_client.cli", "cloud_service.cli", "evaluation.card", "bench.codec"} <= found
    assert "shared.entrypoints" not in found  # the launcher, not a program


def entry_point_imports() -> dict[str, list[str]]:
    """entry point -> the project modules (tests aside) that import it."""
    programs = entry_points()
    found: dict[str, list[str]] = {}
    for module, names in project_imports().items():
        for name in sorted(names & programs - {module}):
            found.setdefault(name, []).append(module)
    return found


def test_nothing_imports_an_entry_point():
    """No program is another's library: ``models/`` stands as library modules under its entry
    points (spic-train, spic-train-reference, spic-export, spic-int8), and so must every package."""
    wrong = [
        f"{module} imports the entry point {name}"
        for name, modules in entry_point_imports().items()
        for module in modules
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_modules_stay_short():
    """Each module one concern, under 400 lines (the project's bar), in every package."""
    long = {
        str(p.relative_to(ROOT)): n
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


# The cloud's layers: app -> routes -> services -> stores, runtime and state.
ROUTES, SERVICES = "cloud_service.routes", "cloud_service.services"
# What a route may use besides the services: the request's dependencies (state), its answers
# (problems, the schemas), the configuration it reads, and RFC 3339 text (timeutil).
ROUTE_MAY_IMPORT = (
    SERVICES,
    "cloud_service.state",
    "cloud_service.problems",
    "cloud_service.settings",
    "cloud_service.metrics",
    "cloud_service.timeutil",
    "shared.schemas",
)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def route_modules() -> set[str]:
    """The modules under ``cloud_service/routes`` that add routes to the app: they define a
    ``router`` or take the ``FastAPI`` app. The others there (``common``, ``query_params``) are
    helpers: HTTP bits the route modules share."""
    found = set()
    for path in (ROOT / "cloud_service" / "routes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "router" for t in node.targets)
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "fastapi"
                and "FastAPI" in {a.name for a in node.names}
            ):
                found.add(f"{ROUTES}.{path.stem}")
    return found


def test_routes_call_services():
    """A module under ``cloud_service/routes`` parses HTTP and calls services: of the project it
    imports only ``cloud_service.services``, ``ROUTE_MAY_IMPORT`` and the route helpers, never a
    store, the runtime, the batcher or another route module (a route's module is nobody's
    library). Services import no route."""
    routes = route_modules()
    assert {f"{ROUTES}.inference", f"{ROUTES}.frames", f"{ROUTES}.live"} <= routes
    assert {f"{ROUTES}.dashboard", f"{ROUTES}.docs"} <= routes
    assert not {f"{ROUTES}.common", f"{ROUTES}.query_params"} & routes
    wrong = []
    for module, names in project_imports().items():
        for name in names:
            if _within(module, SERVICES) and _within(name, ROUTES):
                wrong.append(f"the service {module} imports the route {name}")
            if not _within(module, ROUTES) or module == ROUTES:
                continue
            helper = _within(name, ROUTES) and not any(_within(name, r) for r in routes)
            if not helper and not any(_within(name, p) for p in ROUTE_MAY_IMPORT):
                wrong.append(f"the route {module} imports {name}")
    assert not wrong, "\n".join(sorted(wrong))
