"""The JobSpec of API.md: what to train, on what, and how."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator

from core.spec.base import PositiveInt, StrictModel, printable, shorthand
from core.spec.layers import LayerSpec
from core.spec.optim import Adam, OptimizerSpec


class Validation(StrictModel):
    """Hold out `split` of the training data after a seeded shuffle, or use another dataset."""

    split: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    dataset: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Validation:
        if (self.split is None) == (self.dataset is None):
            raise ValueError('give exactly one of "split" (e.g. 0.1) or "dataset" (an id)')
        return self


MAX_LAYERS = 1000


# `_one_form` in JSON Schema terms, so that the published schema admits only models the
# validator accepts: `layers` alone, or `nodes` with `output` (a null counts as absent).
_ONE_FORM: dict[str, Any] = {
    "oneOf": [
        {
            "title": "chain",
            "required": ["layers"],
            "properties": {
                "layers": {"type": "array"},
                "nodes": {"type": "null"},
                "output": {"type": "null"},
            },
        },
        {
            "title": "graph",
            "required": ["nodes", "output"],
            "properties": {
                "nodes": {"type": "array"},
                "output": {"type": "string"},
                "layers": {"type": "null"},
            },
        },
    ]
}


class ModelSpec(StrictModel):
    """A chain (`layers`) or a graph (`nodes` + `output`); exactly one of the two."""

    model_config = ConfigDict(json_schema_extra=_ONE_FORM)

    layers: Annotated[list[LayerSpec], Field(max_length=MAX_LAYERS)] | None = None
    nodes: Annotated[list[LayerSpec], Field(max_length=MAX_LAYERS)] | None = None
    output: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ModelSpec:
        if (self.layers is None) == (self.nodes is None):
            raise ValueError(
                'give either "layers" (a chain) or "nodes" with "output" (a graph), not both'
            )
        if self.nodes is not None and self.output is None:
            raise ValueError('a graph model needs "output": the name of the node to train')
        if self.layers is not None and self.output is not None:
            raise ValueError(
                '"output" belongs to graph models ("nodes"); a chain ends at its last layer'
            )
        for index, layer in enumerate(self.layers or self.nodes or []):
            if layer.name is None:
                layer.name = f"{layer.type}_{index}"
        return self

    @property
    def is_graph(self) -> bool:
        return self.nodes is not None

    @property
    def all_layers(self) -> list[LayerSpec]:
        return list(self.layers if self.layers is not None else self.nodes or [])


class CrossEntropyLoss(StrictModel):
    type: Literal["cross_entropy"]
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class BinaryCrossEntropyLoss(StrictModel):
    type: Literal["binary_cross_entropy"]


class MSELoss(StrictModel):
    type: Literal["mse"]


class SSELoss(StrictModel):
    type: Literal["sse"]


LossSpec = Annotated[
    CrossEntropyLoss | BinaryCrossEntropyLoss | MSELoss | SSELoss,
    Field(discriminator="type"),
    shorthand(CrossEntropyLoss, BinaryCrossEntropyLoss, MSELoss, SSELoss),
]


class AccuracyMetric(StrictModel):
    type: Literal["accuracy"]


class MAEMetric(StrictModel):
    type: Literal["mae"]


class TopKAccuracyMetric(StrictModel):
    type: Literal["top_k_accuracy"]
    k: PositiveInt = 5


MetricSpec = Annotated[
    AccuracyMetric | MAEMetric | TopKAccuracyMetric,
    Field(discriminator="type"),
    shorthand(AccuracyMetric, MAEMetric, TopKAccuracyMetric),
]


class EarlyStopping(StrictModel):
    monitor: str = "val_loss"
    # None: "max" for accuracy-like metrics, "min" otherwise; filled in at validation.
    mode: Literal["min", "max"] | None = None
    patience: Annotated[int, Field(ge=0)] = 3
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0
    restore_best: bool = True


class StopWhen(StrictModel):
    metric: str
    below: float | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StopWhen:
        if (self.below is None) == (self.above is None):
            raise ValueError('give exactly one of "below" or "above"')
        return self


class Training(StrictModel):
    epochs: Annotated[int, Field(ge=0, le=100_000)] = 10
    batch_size: PositiveInt | Literal["full"] = 32
    shuffle: bool = True
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    early_stopping: EarlyStopping | None = None
    stop_when: StopWhen | None = None
    # A checkpoint at the first epoch boundary this long after the previous one, and
    # (when set) every that many epochs; always at the end and at a stop.
    checkpoint_every_seconds: Annotated[float, Field(gt=0)] = 60.0
    checkpoint_every_epochs: PositiveInt | None = None
    max_runtime_seconds: Annotated[float, Field(gt=0)] | None = None
    log_every_steps: PositiveInt = 10


class InitFrom(StrictModel):
    job: str


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(printable)]


# The most devices one job may ask for: a host with more is rare, and a typo (devices:
# 800) should be refused at submit rather than wait forever for such a worker.
MAX_DEVICES = 64


def _device_count(value: Any) -> Any:
    """One clear message for every bad `devices` (the union would report one per member)."""
    if value == "all" or (type(value) is int and 1 <= value <= MAX_DEVICES):
        return value
    raise ValueError(
        f'devices must be a whole number from 1 to {MAX_DEVICES}, or "all" (every device of '
        f"the worker that runs the job); got {value!r}"
    )


class Resources(StrictModel):
    """What a job needs of the worker that runs it: `devices` local accelerators (or CPU
    devices) for data-parallel training, an integer or `"all"` of the worker's devices."""

    devices: Annotated[
        Annotated[int, Field(ge=1, le=MAX_DEVICES)] | Literal["all"],
        BeforeValidator(_device_count),
    ] = 1

    @property
    def fixed_devices(self) -> int | None:
        """The number of devices asked for; None for `"all"` (known once a worker runs it)."""
        return None if self.devices == "all" else int(self.devices)


class JobSpec(StrictModel):
    name: Name | None = None
    dataset: Annotated[str, Field(min_length=1)]
    validation: Validation | None = None
    model: ModelSpec
    loss: LossSpec
    metrics: list[MetricSpec] = Field(default_factory=list)
    optimizer: OptimizerSpec = Field(default_factory=lambda: Adam(type="adam"))
    training: Training = Field(default_factory=Training)
    init_from: InitFrom | None = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    resources: Resources = Field(default_factory=Resources)
