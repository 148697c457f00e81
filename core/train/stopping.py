"""Epoch-end decisions: early stopping (with best-epoch tracking) and stop_when."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.spec.job import EarlyStopping, StopWhen


@dataclass
class EarlyStoppingState:
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0

    def update(
        self, spec: EarlyStopping, metrics: dict[str, float], epoch: int
    ) -> tuple[bool, bool]:
        """Record an epoch; returns (improved, should_stop)."""
        value = metrics[spec.monitor]
        sign = 1.0 if spec.mode == "min" else -1.0
        improved = self.best is None or sign * (self.best - value) > spec.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        return improved, not improved and self.wait >= max(spec.patience, 1)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def stop_when_reached(spec: StopWhen | None, metrics: dict[str, float]) -> bool:
    if spec is None:
        return False
    value = metrics[spec.metric]
    return (spec.below is not None and value < spec.below) or (
        spec.above is not None and value > spec.above
    )
