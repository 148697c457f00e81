"""What the predict endpoint takes and answers."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_EXAMPLES = 10_000
# How deeply the schema describes an example's nesting (an image is [h, w, c]: 3 levels).
MAX_INPUT_RANK = 6


def _numbers(rank: int) -> dict[str, Any]:
    """JSON Schema of a number or of nested lists of numbers, `rank` levels deep at most."""
    if rank == 0:
        return {"type": "number"}
    return {"anyOf": [{"type": "number"}, {"type": "array", "items": _numbers(rank - 1)}]}


_IRIS_EXAMPLES: list[Any] = [[-0.9, 1.0, -1.3, -1.3], [1.0, 0.1, 0.9, 1.2]]


class PredictionRequest(BaseModel):
    """Examples to run through the job's trained model."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inputs": _IRIS_EXAMPLES}]}
    )

    # Checked against the model's input shape by the service (`loc` names the example),
    # so a 10,000-example request is not validated value by value twice.
    inputs: Annotated[
        list[Any],
        Field(
            min_length=1,
            max_length=MAX_EXAMPLES,
            description="1 to 10,000 examples, each a nested list of numbers with the "
            "shape of the training data's examples (the dataset's `input_shape`)",
            # Documents the values (no strings, null or true/false); the service checks
            # them and the shape in one pass (`loc` names the example).
            json_schema_extra={"items": _numbers(MAX_INPUT_RANK)},
        ),
    ]


class PredictionPublic(BaseModel):
    """The model's outputs, and for classifiers the predicted class of each example."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"outputs": [[4.1, -0.3, -3.2], [-2.9, 0.4, 2.2]], "classes": [0, 2]},
            ]
        }
    )

    outputs: list[Any] = Field(
        description="the last layer's values per example, shape `[len(inputs), *output_shape]` "
        "(logits for a model trained with cross_entropy or binary_cross_entropy); "
        "non-finite values are null"
    )
    classes: list[Any] | None = Field(
        None,
        description="classifiers only: the class index per example — the argmax of the "
        "outputs, or for a single output unit (and binary_cross_entropy) the output "
        "thresholded at 0 for logits and 0.5 for a sigmoid; absent for regression",
    )
