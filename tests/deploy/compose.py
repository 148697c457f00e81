"""docker-compose.yml as Docker Compose reads it, without a Docker engine.

- `read_env_file`: `.env`-style `KEY=VALUE` lines.
- `interpolate`: Compose's variable substitution in every string of the file (`$$`, `$VAR`,
  `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
  `${VAR:+alt}`, `${VAR+alt}`); a missing required variable raises `MissingVariable` with
  the file's own message, as `docker compose` refuses to start.
- `load_compose`: the parsed file (YAML merge keys resolved), interpolated.
- `backprop_services`: the services that run Backprop's image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(
    rf"\$(?:(?P<escaped>\$)|\{{(?P<braced>{_NAME})(?:(?P<op>:?[-?+])(?P<arg>[^}}]*))?\}}"
    rf"|(?P<bare>{_NAME}))"
)


class MissingVariable(ValueError):
    """A `${VAR:?message}` whose variable is unset (or empty)."""


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(_NAME, key.strip()):
            raise ValueError(f"{path.name}:{number}: expected KEY=VALUE, got {line!r}")
        values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        value, op, arg = env.get(name), match["op"], match["arg"]
        if "$" in (arg or ""):
            raise ValueError(f"nested substitution is not supported here: {match[0]!r}")
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if missing else str(value)
        if op in (":?", "?"):
            if missing:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if missing else arg
        return value or ""

    return _REFERENCE.sub(substitute, text)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def parse_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The file as YAML (merge keys resolved), before interpolation."""
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path.name} is not a mapping"
    return document


def load_compose(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The file as `docker compose config` sees it with `env` as its `.env`."""
    tree: dict[str, Any] = _interpolate_tree(parse_compose(path), env)
    return tree


def backprop_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from this repository's Dockerfile."""
    return {name: spec for name, spec in compose["services"].items() if "build" in spec}


def container_port(published: str) -> int:
    """`[HOST_IP:]HOST_PORT:CONTAINER_PORT` → CONTAINER_PORT."""
    return int(str(published).rsplit(":", 1)[-1].split("/")[0])
