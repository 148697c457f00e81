"""`TrialJudge`: a sweep's early-termination rule, applied as a trial's metrics are written.

The training process's recorder calls `judge` in the transaction that writes a batch of
the trial's metric points (about once a second), after writing them, so each decision
sees this trial's value and every value the other trials have committed. When it says
stop, the recorder's `should_stop` answers PRUNED and the run ends at its next chunk
boundary, like a cancel, with `summary.stop_reason = "pruned"`.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.db.models import Job, Metric, Sweep
from app.domain.sweeps.definition import SweepDefinition
from app.domain.sweeps.pruning import continues, decision_epochs


def series_name(metric: str) -> str:
    """The stored series of a per-epoch metric: the epoch's mean loss is `epoch_loss`
    (the series `loss` holds the per-step batch losses)."""
    return "epoch_loss" if metric == "loss" else metric


class TrialJudge:
    def __init__(
        self, definition: SweepDefinition, *, sweep_id: str, number: int, epochs: int
    ) -> None:
        assert definition.early_termination is not None
        self.rule = definition.early_termination
        self.metric = definition.metric
        self.series = series_name(definition.metric.name)
        self.sweep_id = sweep_id
        self.number = number
        self.pending = set(decision_epochs(self.rule, epochs))

    @classmethod
    def for_job(cls, session: Session, job: Job) -> TrialJudge | None:
        """The judge of a trial whose sweep has an early-termination rule, else None."""
        if job.sweep_id is None or job.trial_number is None:
            return None
        sweep = session.get(Sweep, job.sweep_id)
        if sweep is None:
            return None
        definition = SweepDefinition.model_validate(sweep.definition)
        if definition.early_termination is None:
            return None
        epochs = int(job.spec.get("training", {}).get("epochs", 0))
        return cls(definition, sweep_id=sweep.id, number=job.trial_number, epochs=epochs)

    def judge(self, session: Session, recorded: Mapping[int, float]) -> bool:
        """`recorded`: this trial's metric values just written, by epoch count (epoch
        index + 1). True when the trial should stop. Each decision epoch is judged once."""
        for count in sorted(self.pending & set(recorded)):
            self.pending.discard(count)
            if not continues(self.rule, self.metric, recorded[count], self._peers(session, count)):
                return True
        return False

    def _peers(self, session: Session, count: int) -> list[float]:
        """ASHA: every trial's value at this epoch, this one's included; median: the trials
        numbered before this one."""
        statement = (
            select(Metric.value)
            .join(Job, Job.id == Metric.job_id)
            .where(
                Job.sweep_id == self.sweep_id,
                Metric.name == self.series,
                Metric.epoch == count - 1,
            )
        )
        if self.rule.type == "median":
            statement = statement.where(Job.trial_number < self.number)
        return [float(value) for value in session.scalars(statement)]
