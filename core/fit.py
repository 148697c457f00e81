"""`fit_check`: does a set of tensors fit the model a spec builds?

One check for every way tensors reach a model: a model file imported or exported
(core/export.py), a job's `init_from` checked at submission (the API) and the
parameters `train` starts from. The expected tensors are traced with `jax.eval_shape`,
so nothing is computed and the API process never starts a device backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from core.errors import FitError
from core.model import ABSTRACT_KEY, Model
from core.spec import JobSpec

Shape = tuple[int, ...]
# Enough problems to tell a slightly wrong model from an unrelated one, without a
# message that lists every tensor of a large model.
MAX_PROBLEMS_SHOWN = 5


def fit_check(
    spec: JobSpec,
    input_shape: Sequence[int],
    tensors: Mapping[str, Any],
    state: Mapping[str, Any] | None = None,
) -> None:
    """Raise unless `tensors` are exactly the tensors of `spec`'s model, shapes and dtypes.

    Names are API.md's tensor names, `<layer>.<param>` (`dense_1.kernel`); a tree may be
    flat (`{"dense_1.kernel": a}`), nested (`{"dense_1": {"kernel": a}}`, as `Model.init`
    returns it) or both. A tensor is anything with `.shape` and `.dtype` (numpy or jax
    arrays, `jax.ShapeDtypeStruct`).

    Args:
      spec: a validated JobSpec; its model is built for examples of `input_shape`.
      input_shape: the per-example input shape (no batch dimension).
      tensors: the parameters; with `state=None`, the parameters and model state
        together (a file whose tensors are not told apart).
      state: the model state (batch-norm `mean`/`var`), checked against the model's
        state while `tensors` is checked against its parameters.

    Raises:
      FitError (a ValueError): the input shape does not fit the model, or some tensors
        are missing, not part of the model, stored as the other kind (parameter or
        state), or have another shape or dtype. The message names each such tensor
        (up to MAX_PROBLEMS_SHOWN) with what the model expects.
    """
    want_params, want_state = expected_tensors(spec, input_shape)
    have_params = dict(_flat_items(tensors))
    if state is None:
        problems = _problems("", have_params, {**want_params, **want_state}, {}, have_params)
    else:
        have_state = dict(_flat_items(state))
        given = {**have_params, **have_state}
        problems = _problems("a parameter", have_params, want_params, want_state, given)
        problems += _problems("model state", have_state, want_state, want_params, given)
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        raise FitError(shown + (f" (and {more} more)" if more > 0 else ""))


def expected_tensors(
    spec: JobSpec, input_shape: Sequence[int]
) -> tuple[dict[str, jax.ShapeDtypeStruct], dict[str, jax.ShapeDtypeStruct]]:
    """`{name: shape and dtype}` of the parameters and of the state of `spec`'s model.

    Args:
      spec: a validated JobSpec.
      input_shape: the per-example input shape (no batch dimension).

    Returns:
      (parameters, state), each keyed by tensor name (`dense_1.kernel`), traced with
      `jax.eval_shape` rather than computed.

    Raises:
      FitError: the model cannot take examples of `input_shape`.
    """
    model = Model(spec.model)
    shape = tuple(int(d) for d in input_shape)
    try:
        params, state = jax.eval_shape(lambda k: model.init(k, shape), ABSTRACT_KEY)
    except (TypeError, ValueError) as exc:
        raise FitError(f"input shape {list(shape)} does not fit the spec's model: {exc}") from None
    return dict(_flat_items(params)), dict(_flat_items(state))


def _problems(
    kind: str,
    have: Mapping[str, Any],
    want: Mapping[str, jax.ShapeDtypeStruct],
    other: Mapping[str, jax.ShapeDtypeStruct],
    present: Mapping[str, Any],
) -> list[str]:
    """What is wrong with the tensors `have` of one kind, compared with the model's `want`.

    `other` is what the model has of the other kind and `present` every tensor given, so
    a tensor filed under the wrong kind is reported once, as misfiled, not also missing.
    """
    problems = []
    for name in sorted(have.keys() - want.keys()):
        if name in other:
            other_kind = "model state" if kind == "a parameter" else "a parameter"
            problems.append(
                f"tensor {name!r} is stored as {kind}; the spec's model has it as {other_kind}"
            )
        else:
            problems.append(f"tensor {name!r} is not part of the spec's model")
    for name in sorted(want.keys() - present.keys()):
        problems.append(
            f"tensor {name!r} is missing; the spec's model expects shape {list(want[name].shape)}"
        )
    for name in sorted(have.keys() & want.keys()):
        got, expected = have[name], want[name]
        if tuple(got.shape) != tuple(expected.shape):
            problems.append(
                f"tensor {name!r} has shape {list(got.shape)}; "
                f"the spec's model expects {list(expected.shape)}"
            )
        elif np.dtype(got.dtype) != np.dtype(expected.dtype):
            problems.append(
                f"tensor {name!r} is {np.dtype(got.dtype)}; the spec's model expects "
                f"{np.dtype(expected.dtype)}"
            )
    return problems


def _flat_items(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from _flat_items(value, name)
        else:
            yield name, value
