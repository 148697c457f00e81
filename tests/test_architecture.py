"""Imports flow one way (DESIGN.md): app → core, worker → app's domain + core, core → nothing
of ours; the domain (app/domain) and the workers never touch HTTP."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The HTTP side of app/: what neither the domain nor a worker may import.
HTTP = {
    "fastapi",
    "starlette",
    "uvicorn",
    "app.main",
    "app.deps",
    "app.errors",
    "app.routers",
    "app.schemas",
    "app.services",
    "app.dashboard",
}

# package → modules it must never import (a name forbids its submodules too)
FORBIDDEN = {
    "core": {
        "app",
        "worker",
        "fastapi",
        "starlette",
        "sqlalchemy",
        "alembic",
        "celery",
        "kombu",
        "redis",
        "psycopg",
        "uvicorn",
    },
    "app": {"worker"},
    "app/domain": {"worker", "celery", "kombu", *HTTP},
    "worker": HTTP,
    # The client talks to the server over HTTP only: installable and usable without it.
    "backprop_client": {"app", "core", "worker"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, with its parents (`app.domain.db` gives `app` too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: bad for path, bad in offenders.items() if bad} == {}


def test_the_worker_loads_no_http_and_its_main_process_no_jax() -> None:
    """Not only the worker's own imports: nothing they import may bring these in either."""
    probe = (
        "import sys, worker.celery_app, worker.tasks, worker.supervisor, worker.__main__\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'fastapi', 'starlette'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_celery_main_process_modules_do_not_import_jax() -> None:
    """JAX must never initialise in the Celery main process (DESIGN.md, Workers and JAX)."""
    main_process = ["celery_app.py", "tasks.py", "supervisor.py", "__main__.py"]
    for name in main_process:
        path = ROOT / "worker" / name
        assert "jax" not in imported_modules(path), f"worker/{name} imports jax"
