"""The `inputs` of a prediction request as one float32 array of the model's input shape.

Every rejection is a 422 whose `loc` points at the offending example
(`["body", "inputs", 3]`) and whose message gives the expected and the actual shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.domain.errors import InvalidInput
from core.errors import ErrorItem

Shape = tuple[int, ...]
_NUMERIC_KINDS = "iuf"  # what numpy makes of JSON numbers; strings, null and true/false are not


def input_array(inputs: Sequence[Any], input_shape: Shape) -> np.ndarray:
    """`inputs` as float32 `[len(inputs), *input_shape]`, or a 422 naming the bad example.

    Args:
      inputs: the request's examples, nested lists of JSON numbers.
      input_shape: the model's per-example input shape (no batch dimension).

    Raises:
      InvalidInput: ragged or wrongly shaped examples, values that are not numbers,
        and non-finite values (including numbers beyond float32's range).
    """
    try:
        array = np.asarray(inputs)
    except ValueError:  # ragged: the examples (or their rows) differ in length
        array = None
    if array is not None and array.dtype == object and _only_numbers(inputs):
        array = np.asarray(inputs, dtype=np.float64)  # integers beyond int64 are numbers too
    if array is None or array.dtype.kind not in _NUMERIC_KINDS or array.shape[1:] != input_shape:
        raise _first_bad_example(inputs, input_shape)
    with np.errstate(over="ignore"):  # overflow to inf is reported as a non-finite value
        values = array.astype(np.float32)
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if not finite.all():
        index = int(np.argmin(finite))
        raise _error(
            index,
            f"inputs[{index}] holds a value that is not a finite float32 number "
            "(NaN, Infinity or beyond ±3.4e38)",
            "finite_number",
        )
    return values


def _only_numbers(value: Any) -> bool:
    """Whether `value` is a JSON number or nested lists of them (true/false are not)."""
    if isinstance(value, list):
        return all(_only_numbers(item) for item in value)
    return type(value) in (int, float)


def _first_bad_example(inputs: Sequence[Any], input_shape: Shape) -> InvalidInput:
    """The error for the first example that is ragged, wrongly shaped or not numeric.

    Only runs on the error path, so looking at the examples one by one costs nothing in
    the common case.
    """
    want = list(input_shape)
    for index, example in enumerate(inputs):
        try:
            array = np.asarray(example)
        except ValueError:
            return _error(
                index,
                f"inputs[{index}] is ragged: its rows differ in length; "
                f"each example must have the model's input shape {want}",
                "shape_mismatch",
            )
        if array.shape != input_shape:
            return _error(
                index,
                f"inputs[{index}] has shape {list(array.shape)} but the model expects "
                f"examples of shape {want} (inputs: a list of examples, each of shape {want})",
                "shape_mismatch",
            )
        if array.dtype.kind not in _NUMERIC_KINDS:
            return _error(
                index,
                f"inputs[{index}] holds values that are not numbers: every value must be "
                "a JSON number (no strings, null or true/false)",
                "float_type",
            )
    # Each example is fine alone but numpy could not stack them: mixed types across examples.
    return _error(None, "the examples could not be read as one array of numbers", "float_type")


def _error(index: int | None, msg: str, type: str) -> InvalidInput:
    loc: tuple[str | int, ...] = ("body", "inputs") if index is None else ("body", "inputs", index)
    return InvalidInput.of([ErrorItem(loc, msg, type)])
