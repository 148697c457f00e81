"""Trained models as `.safetensors` files: what `GET /v1/jobs/{id}/model` serves.

A file holds one float32 tensor per parameter and per model-state array, named
`<layer name>.<param>` (nested keys of composite layers joined with `.`, e.g.
`transformer_block_1.attention.query`), in the layouts the engine uses: dense kernels
`[in, out]`, conv kernels `[kh, kw, in, out]`. Its string metadata holds:

- `format`: `backprop/1`, so a foreign file is told apart from a Backprop model;
- `spec`: the validated JobSpec as JSON (defaults filled in), which says how to rebuild
  the model;
- `state_tensors`: a JSON list of the tensors that are non-trainable state (batch-norm
  running `mean`/`var`), so the file alone says which is which;
- `input_shape` (when the exporter knows it): the per-example input shape as a JSON list.
  With it, both export and import check every tensor's name and shape against the model
  the spec builds.

The user-facing description is docs/export.md.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from core.files import write_atomically
from core.fit import fit_check
from core.model import Model
from core.spec import JobSpec, parse_spec

FORMAT = "backprop/1"
Params = dict[str, Any]
Shape = tuple[int, ...]
_HEADER_LIMIT = 100 * 1024 * 1024  # the same bound the safetensors library enforces


def export_model(
    params: Params,
    model_state: Params,
    spec: JobSpec,
    *,
    input_shape: Sequence[int] | None = None,
) -> bytes:
    """Serialise a trained model to the bytes of a `.safetensors` file.

    Args:
      params: `{layer name: {param: array}}` (nested dicts for composite layers), as
        `Model.init` or `train` return them; floating arrays are stored as float32.
      model_state: the same shape of tree for non-trainable state (batch-norm statistics).
      spec: the validated JobSpec the model was built from.
      input_shape: per-example input shape (no batch dimension). When given, it is stored
        and every tensor is checked against the model the spec builds for it.

    Raises:
      ValueError: a tensor that is not floating point, a name that cannot be a tensor name,
        a name in both trees, or (with `input_shape`) a tensor the spec's model does not
        have, lacks, or has with another shape.
    """
    param_tensors = _flatten(params)
    state_tensors = _flatten(model_state)
    both = sorted(param_tensors.keys() & state_tensors.keys())
    if both:
        raise ValueError(f"tensor {both[0]!r} is both a parameter and model state")
    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    _check_against_spec(param_tensors, state_tensors, spec, shape)
    metadata = {
        "format": FORMAT,
        "spec": spec.model_dump_json(),
        "state_tensors": json.dumps(sorted(state_tensors)),
    }
    if shape is not None:
        metadata["input_shape"] = json.dumps(list(shape))
    data: bytes = safetensors.numpy.save({**param_tensors, **state_tensors}, metadata)
    return data


def write_model(
    path: str | os.PathLike[str],
    params: Params,
    model_state: Params,
    spec: JobSpec,
    *,
    input_shape: Sequence[int] | None = None,
) -> Path:
    """`export_model` to a file, atomically: readers see the old file or the new, never half.

    The bytes go to a temporary file in the same directory, are fsynced, and are renamed
    over `path`; the directory is fsynced so the rename survives a crash. Returns the path.
    """
    data = export_model(params, model_state, spec, input_shape=input_shape)
    return write_atomically(path, lambda file: file.write(data))


def import_model(source: bytes | str | os.PathLike[str]) -> tuple[Params, Params, JobSpec]:
    """Read a model file written by `export_model`: `(params, model_state, spec)`.

    Args:
      source: the file's bytes, or its path.

    Returns:
      The parameter and state trees as `export_model` took them, with float32 numpy arrays
      bit-identical to the exported ones, and the JobSpec from the metadata.

    Raises:
      ValueError: not a safetensors file, not a Backprop model (no `format: backprop/1`),
        an unreadable spec, or tensors that do not match the spec's model (the message
        names the tensor and the expected and actual shapes).
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    metadata = _read_metadata(data)
    if metadata.get("format") != FORMAT:
        found = metadata.get("format")
        raise ValueError(
            f"not a Backprop model: metadata 'format' is {found!r}, expected {FORMAT!r}"
        )
    spec = _metadata_spec(metadata)
    state_names = _metadata_state_names(metadata)
    input_shape = _metadata_input_shape(metadata)
    try:
        tensors: dict[str, np.ndarray] = safetensors.numpy.load(data)
    except Exception as exc:  # the library raises its own error type for damaged files
        raise ValueError(f"not a readable safetensors file: {exc}") from None
    for name, array in tensors.items():
        if array.dtype != np.float32:
            raise ValueError(f"tensor {name!r} is {array.dtype}, a Backprop model holds float32")
    unknown = sorted(set(state_names) - tensors.keys())
    if unknown:
        raise ValueError(f"metadata lists state tensor {unknown[0]!r}, which the file lacks")
    param_tensors = {n: a for n, a in tensors.items() if n not in state_names}
    state_tensors = {n: a for n, a in tensors.items() if n in state_names}
    _check_against_spec(param_tensors, state_tensors, spec, input_shape)
    return _unflatten(param_tensors), _unflatten(state_tensors), spec


def model_input_shape(data: bytes) -> Shape | None:
    """The per-example input shape a model file records (`input_shape`), or None.

    Args:
      data: the file's bytes, as `import_model` takes them.

    Raises:
      ValueError: not a safetensors file, or an `input_shape` that is not a list of sizes.
    """
    return _metadata_input_shape(_read_metadata(data))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "." in key:
            raise ValueError(f"{key!r} under {prefix or 'the root'!r} cannot be a name part")
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
            continue
        array = np.asarray(value)
        if not jnp.issubdtype(array.dtype, jnp.floating):
            raise ValueError(f"tensor {name!r} is {array.dtype}; only floating arrays are saved")
        flat[name] = np.ascontiguousarray(array, dtype=np.float32)
    return flat


def _unflatten(tensors: Mapping[str, np.ndarray]) -> Params:
    tree: Params = {}
    for name in sorted(tensors):
        *parents, leaf = parts = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        if not all(parts) or not isinstance(node, dict) or leaf in node:
            raise ValueError(f"tensor name {name!r} clashes with another tensor or is malformed")
        node[leaf] = tensors[name]
    return tree


def _check_against_spec(
    params: Mapping[str, np.ndarray],
    state: Mapping[str, np.ndarray],
    spec: JobSpec,
    input_shape: Shape | None,
) -> None:
    """Every tensor belongs to the spec's model; with the input shape, exactly its tensors."""
    if input_shape is None:
        layer_names = {node.layer.name for node in Model(spec.model).nodes}
        for name in sorted({**params, **state}):
            if name.split(".", 1)[0] not in layer_names:
                raise ValueError(
                    f"tensor {name!r} names no layer of the spec's model "
                    f"(its layers: {', '.join(sorted(layer_names))})"
                )
        return
    fit_check(spec, input_shape, params, state)


def _read_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors header: 8 bytes little-endian length, then JSON."""
    if len(data) < 8:
        raise ValueError(f"not a safetensors file: {len(data)} bytes is too short for a header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(_HEADER_LIMIT, len(data) - 8):
        raise ValueError("not a safetensors file: the header length is larger than the file")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not a safetensors file: the header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file: the header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("not a safetensors file: its metadata is not an object")
    return metadata


def _metadata_json(metadata: Mapping[str, str], key: str, default: Any = None) -> Any:
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except (TypeError, json.JSONDecodeError):
        raise ValueError(f"model metadata {key!r} is not valid JSON") from None


def _metadata_spec(metadata: Mapping[str, str]) -> JobSpec:
    if "spec" not in metadata:
        raise ValueError("model metadata has no 'spec'")
    try:
        return parse_spec(_metadata_json(metadata, "spec"))
    except ValueError as exc:
        raise ValueError(f"model metadata 'spec' is not a valid JobSpec: {exc}") from None


def _metadata_state_names(metadata: Mapping[str, str]) -> set[str]:
    names = _metadata_json(metadata, "state_tensors", default=[])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"model metadata 'state_tensors' is {names!r}, not a list of names")
    return set(names)


def _metadata_input_shape(metadata: Mapping[str, str]) -> Shape | None:
    shape = _metadata_json(metadata, "input_shape")
    if shape is None:
        return None
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ValueError(f"model metadata 'input_shape' is {shape!r}, not a list of sizes")
    return tuple(shape)
