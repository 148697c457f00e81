"""One pydantic model per layer type of API.md, joined in a `type`-discriminated union."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from core.spec.base import (
    Activation,
    Initializer,
    NamedInit,
    PositiveInt,
    StrictModel,
    UniformInit,
)


def _square(value: object) -> object:
    """`3` means a 3×3 window; the validated spec always shows the `[h, w]` form."""
    return [value, value] if isinstance(value, int) and not isinstance(value, bool) else value


Pair = Annotated[
    list[PositiveInt],
    Field(min_length=2, max_length=2),
    BeforeValidator(_square, json_schema_input_type=PositiveInt | list[PositiveInt]),
]
LayerName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$", max_length=64)]


class LayerBase(StrictModel):
    # Names become tensor-name prefixes (`dense_1.kernel`), hence no dots. Filled in with
    # `<type>_<index>` during validation so the echoed spec shows every name.
    name: LayerName | None = None
    # Only graph nodes have inputs; a chain feeds each layer the previous one's output.
    inputs: list[str] | None = None


class Dense(LayerBase):
    type: Literal["dense"]
    units: PositiveInt
    activation: Activation | None = None
    use_bias: bool = True
    kernel_init: Initializer = NamedInit(type="glorot_uniform")
    bias_init: Initializer = NamedInit(type="zeros")


class Conv2D(LayerBase):
    type: Literal["conv2d"]
    filters: PositiveInt
    kernel_size: Pair
    strides: Pair = [1, 1]  # noqa: RUF012  (pydantic copies defaults)
    padding: Literal["same", "valid"] = "same"
    activation: Activation | None = None
    use_bias: bool = True
    kernel_init: Initializer = NamedInit(type="glorot_uniform")
    bias_init: Initializer = NamedInit(type="zeros")


class MaxPool2D(LayerBase):
    type: Literal["max_pool2d"]
    pool_size: Pair = [2, 2]  # noqa: RUF012
    strides: Pair | None = None  # None means "= pool_size", Keras' default
    padding: Literal["same", "valid"] = "valid"


class AvgPool2D(LayerBase):
    type: Literal["avg_pool2d"]
    pool_size: Pair = [2, 2]  # noqa: RUF012
    strides: Pair | None = None
    padding: Literal["same", "valid"] = "valid"


class GlobalAvgPool2D(LayerBase):
    type: Literal["global_avg_pool2d"]


class Flatten(LayerBase):
    type: Literal["flatten"]


class Reshape(LayerBase):
    type: Literal["reshape"]
    # Per-example target shape; one entry may be -1 (inferred), as in numpy.
    shape: Annotated[list[Annotated[int, Field(ge=-1)]], Field(min_length=1)]


class Dropout(LayerBase):
    type: Literal["dropout"]
    rate: Annotated[float, Field(ge=0.0, lt=1.0)]


class BatchNorm(LayerBase):
    type: Literal["batch_norm"]
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99
    epsilon: Annotated[float, Field(gt=0.0)] = 1e-3


class LayerNorm(LayerBase):
    type: Literal["layer_norm"]
    epsilon: Annotated[float, Field(gt=0.0)] = 1e-3


class ActivationLayer(LayerBase):
    type: Literal["activation"]
    fn: Activation


class Embedding(LayerBase):
    type: Literal["embedding"]
    vocab_size: PositiveInt
    dim: PositiveInt
    embeddings_init: Initializer = UniformInit(type="uniform", low=-0.05, high=0.05)


class Recurrent(LayerBase):
    units: PositiveInt
    return_sequences: bool = False


class LSTM(Recurrent):
    type: Literal["lstm"]


class GRU(Recurrent):
    type: Literal["gru"]


class SimpleRNN(Recurrent):
    type: Literal["rnn"]
    activation: Activation = "tanh"


class Attention(LayerBase):
    type: Literal["attention"]
    num_heads: PositiveInt
    head_dim: PositiveInt
    causal: bool = False


class TransformerBlock(LayerBase):
    type: Literal["transformer_block"]
    num_heads: PositiveInt
    ff_dim: PositiveInt
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    causal: bool = False


class Concat(LayerBase):
    type: Literal["concat"]
    axis: int = -1


class Add(LayerBase):
    type: Literal["add"]


class Slice(LayerBase):
    type: Literal["slice"]
    start: int = 0
    stop: int | None = None


LayerSpec = Annotated[
    Dense
    | Conv2D
    | MaxPool2D
    | AvgPool2D
    | GlobalAvgPool2D
    | Flatten
    | Reshape
    | Dropout
    | BatchNorm
    | LayerNorm
    | ActivationLayer
    | Embedding
    | LSTM
    | GRU
    | SimpleRNN
    | Attention
    | TransformerBlock
    | Concat
    | Add
    | Slice,
    Field(discriminator="type"),
]

# Layers that combine several inputs only make sense in a graph.
JOIN_TYPES = frozenset({"concat", "add"})
