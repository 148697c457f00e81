"""Optimizers and learning-rate schedules from their specs, as optax transformations.

Hyperparameters go through `optax.inject_hyperparams`, so they live in the optimizer
state as arrays: two jobs that differ only in learning rate trace to the same HLO and
share the compilation cache, and the current rate can be read back for the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from core.spec.optim import (
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    StepSchedule,
    WarmupCosineSchedule,
)

ScheduleBuilder = Callable[[Any, int], optax.ScalarOrSchedule]


def _constant(s: ConstantSchedule, total_steps: int) -> optax.ScalarOrSchedule:
    return s.value


def _cosine(s: CosineSchedule, total_steps: int) -> optax.ScalarOrSchedule:
    return optax.cosine_decay_schedule(s.init_value, s.decay_steps or total_steps, s.alpha)


def _warmup_cosine(s: WarmupCosineSchedule, total_steps: int) -> optax.ScalarOrSchedule:
    decay = max(s.decay_steps or total_steps, s.warmup_steps + 1)
    return optax.warmup_cosine_decay_schedule(
        s.init_value, s.peak_value, s.warmup_steps, decay, s.end_value
    )


def _exponential(s: ExponentialSchedule, total_steps: int) -> optax.ScalarOrSchedule:
    return optax.exponential_decay(
        s.init_value, s.transition_steps, s.decay_rate, staircase=s.staircase
    )


def _step(s: StepSchedule, total_steps: int) -> optax.ScalarOrSchedule:
    return optax.exponential_decay(s.init_value, s.step_size, s.gamma, staircase=True)


SCHEDULES: dict[str, ScheduleBuilder] = {
    "constant": _constant,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
    "exponential": _exponential,
    "step": _step,
}

# Each factory takes (learning_rate, spec) and returns the bare optimizer.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr, s: optax.sgd(lr, momentum=s.momentum or None, nesterov=s.nesterov),
    "adam": lambda lr, s: optax.adam(lr, b1=s.b1, b2=s.b2, eps=s.eps),
    "adamw": lambda lr, s: optax.adamw(
        lr, b1=s.b1, b2=s.b2, eps=s.eps, weight_decay=s.weight_decay
    ),
    "rmsprop": lambda lr, s: optax.rmsprop(
        lr, decay=s.decay, eps=s.eps, momentum=s.momentum or None
    ),
    "adagrad": lambda lr, s: optax.adagrad(
        lr, initial_accumulator_value=s.initial_accumulator_value, eps=s.eps
    ),
    "lion": lambda lr, s: optax.lion(lr, b1=s.b1, b2=s.b2, weight_decay=s.weight_decay),
}

# Optimizers whose own update applies (decoupled) weight decay; the others get L2-style
# decay added to the gradient, as `weight_decay` does in PyTorch's SGD/Adam.
DECOUPLED_DECAY = frozenset({"adamw", "lion"})


def build_optimizer(spec: Any, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation for an optimizer spec.

    Args:
      spec: a validated optimizer spec (core/spec/optim.py).
      total_steps: steps in the whole run; the default horizon of decaying schedules.
    """
    rate = SCHEDULES[spec.learning_rate.type](spec.learning_rate, max(total_steps, 1))
    base = optax.inject_hyperparams(
        lambda learning_rate: OPTIMIZERS[spec.type](learning_rate, spec)
    )(learning_rate=rate)
    parts: list[optax.GradientTransformation] = []
    if spec.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(spec.clip_norm))
    if spec.weight_decay and spec.type not in DECOUPLED_DECAY:
        parts.append(optax.add_decayed_weights(spec.weight_decay))
    return optax.chain(*parts, base)


def current_learning_rate(opt_state: Any) -> Any:
    """The learning rate the last step used, read from the injected hyperparameters.

    Found by name wherever `inject_hyperparams` sits in the chain. A schedule also keeps
    its own state under `hyperparams_states["learning_rate"]`, hence the filter.
    """
    rate = optax.tree_utils.tree_get(
        opt_state, "learning_rate", filtering=_is_injected_hyperparameter
    )
    return jnp.asarray(rate)


def _is_injected_hyperparameter(path: tuple[Any, ...], value: Any) -> bool:
    return len(path) >= 2 and getattr(path[-2], "name", None) == "hyperparams"
