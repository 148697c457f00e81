"""A JobSpec's model as a graph of layers: build, check shapes, init, apply.

A chain (`layers`) is the graph where each layer reads the previous one. Parameters and
state are `{layer name: {param name: array}}`, so `params["dense_1"]["kernel"]` is the
tensor API.md exports as `dense_1.kernel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from core.data.dataset import DatasetInfo
from core.errors import ErrorItem, Loc, SpecError
from core.layers import Layer, ShapeMismatch, build_layer
from core.layers.base import Shape
from core.losses import check_output_shape
from core.spec import GRAPH_INPUT, JobSpec, ModelSpec

Params = dict[str, Any]
# Shape checks trace with an abstract key: nothing runs, so checking a spec (in the API
# process) never starts a device backend.
ABSTRACT_KEY = jax.ShapeDtypeStruct((2,), jnp.uint32)


@dataclass(frozen=True)
class Node:
    layer: Layer[Any]
    inputs: tuple[str, ...]
    loc: Loc  # where the layer sits in the request body, for error messages


class Model:
    """The layers needed to compute the output, in an order where inputs come first."""

    def __init__(self, spec: ModelSpec):
        key = "nodes" if spec.is_graph else "layers"
        nodes: dict[str, Node] = {}
        previous = GRAPH_INPUT
        for index, layer_spec in enumerate(spec.all_layers):
            layer = build_layer(layer_spec)
            inputs = tuple(layer_spec.inputs or ()) if spec.is_graph else (previous,)
            nodes[layer.name] = Node(layer, inputs, ("model", key, index))
            previous = layer.name
        self.output: str = str(spec.output) if spec.is_graph else previous
        self.nodes = _topological(nodes, self.output)

    def init(self, key: jax.Array, input_shape: Shape) -> tuple[Params, Params]:
        """Parameters and state for examples of shape `input_shape` (no batch dimension)."""
        shapes: dict[str, Shape] = {GRAPH_INPUT: tuple(input_shape)}
        params: Params = {}
        state: Params = {}
        for position, node in enumerate(self.nodes):
            in_shapes = [shapes[s] for s in node.inputs]
            p, s = node.layer.init(jax.random.fold_in(key, position), in_shapes)
            if p:
                params[node.layer.name] = p
            if s:
                state[node.layer.name] = s
            shapes[node.layer.name] = _apply_shape(node.layer, p, s, in_shapes)
        return params, state

    def apply(
        self,
        params: Params,
        state: Params,
        x: jax.Array,
        *,
        train: bool,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, Params]:
        """Outputs `[batch, *output_shape]` for inputs `[batch, *input_shape]`, and new state."""
        values = {GRAPH_INPUT: x}
        new_state = dict(state)
        for position, node in enumerate(self.nodes):
            layer = node.layer
            layer_key = (
                jax.random.fold_in(key, position)
                if (train and layer.uses_rng and key is not None)
                else None
            )
            y, s = layer.apply(
                params.get(layer.name, {}),
                state.get(layer.name, {}),
                [values[name] for name in node.inputs],
                train=train,
                key=layer_key,
            )
            if s:
                new_state[layer.name] = s
            values[layer.name] = y
        return values[self.output], new_state


def _topological(nodes: dict[str, Node], output: str) -> list[Node]:
    """Nodes the output depends on, inputs first (cycles were rejected by parse_spec).

    A depth-first walk with its own stack: a chain of a thousand layers is as deep as
    Python's recursion limit."""
    order: list[Node] = []
    seen: set[str] = {GRAPH_INPUT}
    stack: list[tuple[str, bool]] = [(output, False)]
    while stack:
        name, inputs_done = stack.pop()
        if inputs_done:
            order.append(nodes[name])
        elif name not in seen:
            seen.add(name)
            stack.append((name, True))
            stack.extend((source, False) for source in reversed(nodes[name].inputs))
    return order


def _apply_shape(
    layer: Layer[Any], params: Params, state: Params, in_shapes: Sequence[Shape]
) -> Shape:
    batch = [jax.ShapeDtypeStruct((2, *s), jnp.float32) for s in in_shapes]

    def output(p: Params, s: Params, xs: list[jax.Array], key: jax.Array) -> jax.Array:
        return layer.apply(p, s, xs, train=True, key=key if layer.uses_rng else None)[0]

    return tuple(jax.eval_shape(output, params, state, batch, ABSTRACT_KEY).shape[1:])


class ModelShape(NamedTuple):
    output: Shape  # per example
    parameters: dict[str, int]  # trainable values per layer, in graph order

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values())


def check_shapes(spec: JobSpec, info: DatasetInfo) -> ModelShape:
    """Trace the model abstractly against the dataset: the per-example output shape and
    each layer's parameter count (nothing is allocated, however large the model).

    Raises:
      SpecError: whose loc names the first layer (or node) that cannot take its input, and
        whose message says what it expected and what it got.
    """
    model = Model(spec.model)
    shapes: dict[str, Shape] = {GRAPH_INPUT: tuple(info.input_shape)}
    parameters: dict[str, int] = {}
    for node in model.nodes:
        layer = node.layer
        in_shapes = [shapes[s] for s in node.inputs]
        try:
            layer.check(in_shapes)
            p, s = jax.eval_shape(
                lambda k, layer=layer, i=in_shapes: layer.init(k, i), ABSTRACT_KEY
            )
            parameters[layer.name] = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(p))
            shapes[layer.name] = _apply_shape(layer, p, s, in_shapes)
        except (ShapeMismatch, TypeError, ValueError) as exc:
            got = ", ".join(str(list(s)) for s in in_shapes)
            raise SpecError.at(
                node.loc, f"{layer.name} ({layer.spec.type}): {exc} [input shape {got}]"
            ) from None
    output_shape = shapes[model.output]
    last = next(n for n in model.nodes if n.layer.name == model.output)
    problem = check_output_shape(spec.loss, output_shape, info)
    if problem:
        raise SpecError([ErrorItem(last.loc, f"{model.output}: {problem}")])
    return ModelShape(output_shape, parameters)
