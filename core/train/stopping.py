"""Epoch-end decisions, made on the device: early stopping (with the best epoch) and stop_when.

They run inside the jitted program that trains many epochs per dispatch, so that a run
stops at exactly the epoch the rule fires at, as if it had been checked after every epoch.
The rule's thresholds are traced arguments (`StopRules.limits`), so jobs that differ only
in them share a compiled program; which metric a rule watches is part of the program.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from core.spec.job import EarlyStopping, StopWhen


class EarlyState(NamedTuple):
    """Early stopping's running state; `best_epoch` < 0 until an epoch has been seen."""

    best: jax.Array  # float32: the monitored value of the best epoch
    best_epoch: jax.Array  # int32
    wait: jax.Array  # int32: epochs since the best one

    @classmethod
    def initial(cls) -> EarlyState:
        return cls(jnp.float32(0.0), jnp.int32(-1), jnp.int32(0))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> EarlyState:
        """From a checkpoint's `early_stopping` entry (see `as_meta`)."""
        best_epoch = meta["best_epoch"]
        return cls(
            jnp.float32(meta["best"] if best_epoch is not None else 0.0),
            jnp.int32(-1 if best_epoch is None else best_epoch),
            jnp.int32(meta["wait"]),
        )

    def as_meta(self) -> dict[str, Any]:
        """JSON for a checkpoint: {"best", "best_epoch", "wait"}, None before the first epoch."""
        best_epoch = int(self.best_epoch)
        if best_epoch < 0:
            return {"best": None, "best_epoch": None, "wait": int(self.wait)}
        return {"best": float(self.best), "best_epoch": best_epoch, "wait": int(self.wait)}


class Decision(NamedTuple):
    improved: jax.Array  # bool: the monitored metric improved this epoch (restore_best keeps it)
    early_stop: jax.Array  # bool: patience ran out
    reached: jax.Array  # bool: stop_when's bound was crossed


@dataclass(frozen=True)
class StopRules:
    early: EarlyStopping | None
    stop_when: StopWhen | None

    def limits(self) -> dict[str, jax.Array]:
        """The rules' numbers, passed to the program as traced arguments."""
        limits = {}
        if self.early is not None:
            limits["min_delta"] = jnp.float32(self.early.min_delta)
            limits["patience"] = jnp.int32(max(self.early.patience, 1))
        if self.stop_when is not None:
            bound = (
                self.stop_when.below if self.stop_when.below is not None else self.stop_when.above
            )
            limits["bound"] = jnp.float32(bound)
        return limits

    def decide(
        self,
        metrics: dict[str, jax.Array],
        state: EarlyState,
        epoch: jax.Array,
        limits: dict[str, jax.Array],
    ) -> tuple[Decision, EarlyState]:
        """The decision after `epoch` with its `metrics`, and the updated early-stopping state."""
        no = jnp.bool_(False)
        improved = early_stop = reached = no
        if self.early is not None:
            value = metrics[self.early.monitor]
            sign = 1.0 if self.early.mode == "min" else -1.0
            improved = (state.best_epoch < 0) | (sign * (state.best - value) > limits["min_delta"])
            wait = jnp.where(improved, 0, state.wait + 1)
            state = EarlyState(
                jnp.where(improved, value, state.best),
                jnp.where(improved, epoch, state.best_epoch).astype(jnp.int32),
                wait.astype(jnp.int32),
            )
            early_stop = ~improved & (wait >= limits["patience"])
        if self.stop_when is not None:
            value = metrics[self.stop_when.metric]
            below = self.stop_when.below is not None
            reached = value < limits["bound"] if below else value > limits["bound"]
        return Decision(improved, early_stop, reached), state
