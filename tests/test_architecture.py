"""Imports flow one way (DESIGN.md): app → core, worker → app + core, core → nothing of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package → top-level modules it must never import
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
    "worker": set(),
    # The client talks to the server over HTTP only: installable and usable without it.
    "backprop_client": {"app", "core", "worker"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: bad for path, bad in offenders.items() if bad} == {}


def test_celery_main_process_modules_do_not_import_jax() -> None:
    """JAX must never initialise in the Celery main process (DESIGN.md, Workers and JAX)."""
    main_process = ["celery_app.py", "tasks.py", "supervisor.py", "__main__.py"]
    for name in main_process:
        path = ROOT / "worker" / name
        assert "jax" not in imported_modules(path), f"worker/{name} imports jax"
