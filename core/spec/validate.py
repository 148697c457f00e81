"""Schema and structure checks that need no dataset: `parse_spec(dict) -> JobSpec`.

Shape checks against a dataset live in core/model.py (`check_shapes`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.errors import ErrorItem, Loc, SpecError
from core.spec.job import JobSpec
from core.spec.layers import JOIN_TYPES

GRAPH_INPUT = "input"  # the node name under which a graph sees the dataset's features


def parse_spec(data: Any) -> JobSpec:
    """Validate a JobSpec dict; raises `SpecError` with every problem, each with its `loc`."""
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        items = [_to_item(err, data) for err in exc.errors()]
        # A shorthand expanded by a validator (kernel_size 0 → [0, 0]) reports once per copy.
        raise SpecError(list(dict.fromkeys(items))) from None
    problems = [*_model_structure(spec), *_monitored_metrics(spec)]
    if problems:
        raise SpecError(problems)
    return spec


def _to_item(err: Any, data: Any) -> ErrorItem:
    msg = err["msg"].removeprefix("Value error, ")
    return ErrorItem(_strip_union_tags(tuple(err["loc"]), data), msg, err["type"])


def _strip_union_tags(loc: Loc, data: Any) -> Loc:
    """Drop the `type` tags pydantic inserts for discriminated unions.

    pydantic reports `("model", "layers", 2, "conv2d", "kernel_size")`; the API contract
    wants the path into the request body, `("model", "layers", 2, "kernel_size")`. A loc
    element is a tag when the input at that point is an object whose
    `type` equals it and which has no key of that name.
    """
    cleaned: list[str | int] = []
    node: Any = data
    for part in loc:
        if node is not None and not isinstance(node, dict | list):
            break  # the request held a scalar here: deeper parts are union tags or expansions
        is_tag = (
            isinstance(part, str)
            and isinstance(node, dict)
            and part not in node
            and node.get("type") == part
        )
        if is_tag:
            continue
        cleaned.append(part)
        try:
            node = node[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(cleaned)


def _model_structure(spec: JobSpec) -> list[ErrorItem]:
    model = spec.model
    key = "nodes" if model.is_graph else "layers"
    problems: list[ErrorItem] = []
    seen: dict[str, int] = {}
    for index, layer in enumerate(model.all_layers):
        at: Loc = ("model", key, index)
        assert layer.name is not None  # filled in by ModelSpec
        if layer.name in seen:
            problems.append(
                ErrorItem(
                    (*at, "name"),
                    f"duplicate name {layer.name!r} (also used by "
                    f"{key}[{seen[layer.name]}]); names must be unique",
                )
            )
        if layer.name == GRAPH_INPUT:
            problems.append(
                ErrorItem((*at, "name"), f"{GRAPH_INPUT!r} is reserved for the dataset's features")
            )
        seen.setdefault(layer.name, index)
        if not model.is_graph:
            if layer.inputs is not None:
                problems.append(
                    ErrorItem(
                        (*at, "inputs"),
                        'a chain ("layers") feeds each layer the '
                        'previous output; use "nodes" + "output" for a graph with "inputs"',
                    )
                )
            if layer.type in JOIN_TYPES:
                problems.append(
                    ErrorItem(
                        (*at, "type"),
                        f"{layer.type!r} joins several inputs and only "
                        'works in a graph model ("nodes" with "inputs")',
                    )
                )
    if model.is_graph:
        problems += _graph_references(spec, seen)
    return problems


def _graph_references(spec: JobSpec, names: dict[str, int]) -> list[ErrorItem]:
    nodes = spec.model.all_layers
    problems: list[ErrorItem] = []
    for index, node in enumerate(nodes):
        at: Loc = ("model", "nodes", index, "inputs")
        if not node.inputs:
            problems.append(
                ErrorItem(
                    at,
                    f'node {node.name!r} needs "inputs": a list of node '
                    f'names, or ["{GRAPH_INPUT}"] for the dataset features',
                )
            )
            continue
        for j, source in enumerate(node.inputs):
            if source != GRAPH_INPUT and source not in names:
                known = ", ".join([GRAPH_INPUT, *names])
                problems.append(
                    ErrorItem((*at, j), f"unknown input {source!r}; known nodes: {known}")
                )
        if node.type not in JOIN_TYPES and len(node.inputs) != 1:
            problems.append(
                ErrorItem(
                    at,
                    f"{node.type!r} takes exactly one input, got "
                    f"{len(node.inputs)}; join several with a concat or add node",
                )
            )
        if node.type in JOIN_TYPES and len(node.inputs) < 2:
            problems.append(
                ErrorItem(at, f"{node.type!r} joins two or more inputs, got {len(node.inputs)}")
            )
    if spec.model.output not in names:
        problems.append(
            ErrorItem(
                ("model", "output"),
                f"unknown node {spec.model.output!r}; known nodes: {', '.join(names)}",
            )
        )
    if not problems:
        problems += _cycles(spec)
    return problems


def _cycles(spec: JobSpec) -> list[ErrorItem]:
    """Depth-first search; reports the first cycle found with its path."""
    graph = {
        str(n.name): [s for s in (n.inputs or []) if s != GRAPH_INPUT]
        for n in spec.model.all_layers
    }
    index = {n.name: i for i, n in enumerate(spec.model.all_layers)}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for source in graph[name]:
            if state.get(source) == "open":
                return [*path[path.index(source) :], source] if source in path else [source, name]
            if source not in state and (cycle := visit(source, [*path, source])):
                return cycle
        state[name] = "done"
        return None

    for name in graph:
        if name not in state and (cycle := visit(name, [name])):
            where = ("model", "nodes", index[cycle[0]], "inputs")
            return [ErrorItem(where, "the graph has a cycle: " + " -> ".join(reversed(cycle)))]
    return []


def monitorable_metrics(spec: JobSpec) -> list[str]:
    """Names of the per-epoch metrics a run records (what early stopping can watch)."""
    names = ["loss", *(m.type for m in spec.metrics)]
    if spec.validation is not None:
        names += [f"val_{n}" for n in names]
    return names


def _monitored_metrics(spec: JobSpec) -> list[ErrorItem]:
    known = monitorable_metrics(spec)
    problems = []
    training = spec.training
    hint = 'add it to "metrics" (and "validation" for val_*) or pick one of: ' + ", ".join(known)
    if (early := training.early_stopping) is not None:
        if early.monitor not in known:
            problems.append(
                ErrorItem(
                    ("training", "early_stopping", "monitor"),
                    f"{early.monitor!r} is not recorded by this job; {hint}",
                )
            )
        if early.mode is None:
            early.mode = "max" if "accuracy" in early.monitor else "min"
    if training.stop_when is not None and training.stop_when.metric not in known:
        problems.append(
            ErrorItem(
                ("training", "stop_when", "metric"),
                f"{training.stop_when.metric!r} is not recorded by this job; {hint}",
            )
        )
    return problems
