"""Optimizer and learning-rate schedule specs (built into optax in core/optimizers.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.base import StrictModel, shorthand

Rate = Annotated[float, Field(gt=0.0)]
Steps = Annotated[int, Field(gt=0)]


class ConstantSchedule(StrictModel):
    type: Literal["constant"]
    value: Rate


class CosineSchedule(StrictModel):
    type: Literal["cosine"]
    init_value: Rate
    # None: decay over the whole run (epochs × steps per epoch), known once the data is.
    decay_steps: Steps | None = None
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


class WarmupCosineSchedule(StrictModel):
    type: Literal["warmup_cosine"]
    peak_value: Rate
    warmup_steps: Annotated[int, Field(ge=0)]
    init_value: Annotated[float, Field(ge=0.0)] = 0.0
    decay_steps: Steps | None = None  # total steps including warm-up; None = whole run
    end_value: Annotated[float, Field(ge=0.0)] = 0.0


class ExponentialSchedule(StrictModel):
    type: Literal["exponential"]
    init_value: Rate
    transition_steps: Steps
    decay_rate: Rate
    staircase: bool = False


class StepSchedule(StrictModel):
    """Multiply the rate by `gamma` every `step_size` steps (PyTorch's StepLR)."""

    type: Literal["step"]
    init_value: Rate
    step_size: Steps
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1


Schedule = Annotated[
    ConstantSchedule | CosineSchedule | WarmupCosineSchedule | ExponentialSchedule | StepSchedule,
    Field(discriminator="type"),
    shorthand(
        ConstantSchedule,
        CosineSchedule,
        WarmupCosineSchedule,
        ExponentialSchedule,
        StepSchedule,
        scalar_key="value",
    ),
]


def _rate(default: float) -> Schedule:
    return ConstantSchedule(type="constant", value=default)


class OptimizerBase(StrictModel):
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    clip_norm: Annotated[float, Field(gt=0.0)] | None = None


class SGD(OptimizerBase):
    type: Literal["sgd"]
    learning_rate: Schedule = _rate(0.01)
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGD:
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=true needs momentum > 0 (e.g. 0.9)")
        return self


class Adam(OptimizerBase):
    type: Literal["adam"]
    learning_rate: Schedule = _rate(0.001)
    b1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    b2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.999
    eps: Annotated[float, Field(gt=0.0)] = 1e-8


class AdamW(Adam):
    type: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4


class RMSProp(OptimizerBase):
    type: Literal["rmsprop"]
    learning_rate: Schedule = _rate(0.001)
    decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    eps: Annotated[float, Field(gt=0.0)] = 1e-7


class Adagrad(OptimizerBase):
    type: Literal["adagrad"]
    learning_rate: Schedule = _rate(0.01)
    initial_accumulator_value: Annotated[float, Field(ge=0.0)] = 0.1
    eps: Annotated[float, Field(gt=0.0)] = 1e-7


class Lion(OptimizerBase):
    type: Literal["lion"]
    learning_rate: Schedule = _rate(1e-4)
    b1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    b2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99


OptimizerSpec = Annotated[
    SGD | Adam | AdamW | RMSProp | Adagrad | Lion,
    Field(discriminator="type"),
    shorthand(SGD, Adam, AdamW, RMSProp, Adagrad, Lion),
]
