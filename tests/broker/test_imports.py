"""The broker's modules form no import cycle, counting imports inside functions too.

A cycle hidden in a function (routes/tokens imported broker.approvals, which imported tokens back
when it ran) works until someone moves the import; the graph below sees it either way.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKER = ROOT / "broker"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(BROKER.rglob("*.py"))}


def _imports(path: Path, module: str) -> set[str]:
    """The broker modules `path` imports anywhere in its body, `from broker import x` included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


def test_the_import_graph_of_broker_has_no_cycle() -> None:
    graph = {module: _imports(path, module) for module, path in MODULES.items()}
    assert graph["broker.routes.tokens"], "the graph must see the routes' imports"
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_approvals_service_imports_no_route() -> None:
    graph = {module: _imports(path, module) for module, path in MODULES.items()}
    for service in ("broker.approvals", "broker.issuance", "broker.deps"):
        assert not {m for m in graph[service] if m.startswith("broker.routes")}, service


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
