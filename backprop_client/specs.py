"""A JobSpec from a dict or a JSON/YAML file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

SpecSource = dict[str, Any] | str | Path


class SpecFileError(ValueError):
    """A spec file that cannot be read or is not a JSON/YAML object."""


def load_spec(source: SpecSource) -> dict[str, Any]:
    """The spec as a new dict: `source` itself (copied), or a `.json`, `.yaml`/`.yml` file
    (any other name is read as JSON, then as YAML)."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecFileError(f"cannot read the spec file {path}: {error.strerror}") from error
    suffix = path.suffix.lower()
    if suffix == ".json":
        spec = _json(text, path)
    elif suffix in (".yaml", ".yml"):
        spec = _yaml(text, path)
    else:
        try:
            spec = json.loads(text)
        except ValueError:
            spec = _yaml(text, path)
    if not isinstance(spec, dict):
        raise SpecFileError(f"{path}: a spec is a JSON/YAML object, not {type(spec).__name__}")
    return spec


def _json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecFileError(
            f"{path}, line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
        ) from error


def _yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError as error:
        raise SpecFileError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecFileError(f"{path}: invalid YAML: {error}") from error
