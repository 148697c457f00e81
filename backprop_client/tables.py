"""How the CLI shows jobs, datasets and metrics: rich tables and a plain summary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table

from backprop_client.models import Dataset, Job, Metrics, Sweep, Trial

# Per-step or diagnostic series, left out of `backprop metrics` tables unless asked for.
TABLE_HIDDEN_SERIES = (
    "loss",
    "learning_rate",
    "grad_norm",
    "epoch_seconds",
    "samples_per_second",
)


def number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def epochs_done(job: Job) -> str:
    if job.progress is None:
        return ""
    return f"{job.progress.epoch}/{job.progress.epochs}"


def timings_line(timings: dict[str, float]) -> str:
    """`queued 0.04 s · startup 0.21 s · …`, the phases reached so far."""
    return " · ".join(f"{phase} {seconds:.2f} s" for phase, seconds in timings.items())


def _table(*headers: str) -> Table:
    """Columns that fold a long value onto more lines in a narrow terminal, never cut it."""
    table = Table(box=None)
    for header in headers:
        if header in ("id", "status"):  # a UUID stays on one line, to be copied and pasted
            table.add_column(header, no_wrap=True)
        else:
            table.add_column(header, overflow="fold")
    return table


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = _table("id", "name", "status", "epoch", "loss", "val_loss")
    for job in jobs:
        summary = job.summary or {}
        table.add_row(
            job.id,
            job.name,
            job.status,
            epochs_done(job),
            number(summary.get("loss")),
            number(summary.get("val_loss")),
        )
    return table


def job_table(job: Job) -> Table:
    """One job, a row per field; the summary's metrics and the error at the end."""
    table = _table("field", "value")
    table.show_header = False
    progress = job.progress
    steps = f"{epochs_done(job)} (step {progress.step}/{progress.steps})" if progress else None
    rows: list[tuple[str, Any]] = [
        ("id", job.id),
        ("name", job.name),
        ("status", job.status),
        ("dataset", job.dataset),
        ("device", job.device),
        ("worker", job.raw.get("worker")),
        ("attempt", job.attempt),
        ("interruptions", job.platform_interruptions or None),
        ("queue position", job.queue_position),
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("epoch", steps),
        ("eta", None if job.finished else duration(job.eta_seconds) or None),
        *((key, number(value)) for key, value in (job.summary or {}).items() if value is not None),
        ("error", str(job.error) if job.error else None),
        ("timings", timings_line(job.timings) or None),
    ]
    for field, value in rows:
        if value is not None:
            table.add_row(field, str(value))
    return table


def datasets_table(datasets: Iterable[Dataset]) -> Table:
    table = _table("id", "name", "format", "task", "examples", "input", "classes")
    for dataset in datasets:
        table.add_row(
            dataset.id,
            dataset.name,
            dataset.format,
            dataset.task,
            str(dataset.num_examples),
            "×".join(str(size) for size in dataset.input_shape),
            number(dataset.num_classes),
        )
    return table


def metrics_table(metrics: Metrics, names: list[str]) -> Table:
    columns = metrics.columns(names)
    table = _table(*columns)
    for row in zip(*columns.values(), strict=True):
        table.add_row(*(number(value) for value in row))
    return table


def table_series(metrics: Metrics) -> list[str]:
    """The series a metrics table shows by default: the once-per-epoch ones that matter."""
    return [name for name in metrics.names if name not in TABLE_HIDDEN_SERIES]


def summary_lines(job: Job) -> list[str]:
    """How a watched job ended, as plain lines (they must survive a non-terminal capture)."""
    lines = [f"job {job.name} ({job.id}) {job.status}"]
    if job.error:
        lines.append(f"  error: {job.error}")
    for key, value in (job.summary or {}).items():
        if value is not None:
            lines.append(f"  {key:<20} {number(value)}")
    return lines


def sweeps_table(sweeps: Iterable[Sweep]) -> Table:
    table = _table("id", "name", "status", "trials", "best")
    for sweep in sweeps:
        table.add_row(sweep.id, sweep.name, sweep.status, trials_done(sweep), best_value(sweep))
    return table


def trials_done(sweep: Sweep) -> str:
    counts = sweep.trials
    ended = sum(counts.get(k, 0) for k in ("succeeded", "pruned", "failed", "cancelled"))
    return f"{ended}/{sweep.max_trials}"


def best_value(sweep: Sweep) -> str:
    if sweep.best is None:
        return ""
    return f"{number(sweep.best['value'])} (trial {sweep.best['number']})"


def sweep_table(sweep: Sweep) -> Table:
    """One sweep, a row per field: status, budget, counts, the best trial."""
    table = _table("field", "value")
    table.show_header = False
    counts = sweep.trials
    shown = ", ".join(f"{counts[k]} {k}" for k in counts if k != "total" and counts[k])
    metric = f"{sweep.metric.get('name')} ({sweep.metric.get('goal')})"
    best = sweep.best
    rows: list[tuple[str, Any]] = [
        ("id", sweep.id),
        ("name", sweep.name),
        ("status", sweep.status),
        ("method", sweep.method),
        ("metric", metric),
        ("trials", f"{trials_done(sweep)} ended; {shown or 'none yet'}"),
        ("concurrent", sweep.max_concurrent),
        ("epochs used", sweep.epochs_used),
        ("best", best_value(sweep) or None),
        ("best job", best["job_id"] if best else None),
        ("best params", _params(best["params"]) if best else None),
        ("created", sweep.created_at),
        ("finished", sweep.finished_at),
    ]
    for field, value in rows:
        if value is not None:
            table.add_row(field, str(value))
    return table


def trials_table(trials: Iterable[Trial], sweep: Sweep | None = None) -> Table:
    """A row per trial: its values by parameter, status, metric value and epochs."""
    trials = list(trials)
    paths = list(dict.fromkeys(path for trial in trials for path in trial.params))
    metric = sweep.metric.get("name", "value") if sweep else "value"
    table = _table("#", "status", *paths, metric, "epochs", "job")
    best = sweep.best["number"] if sweep and sweep.best else None
    for trial in trials:
        mark = " *" if trial.number == best else ""
        table.add_row(
            f"{trial.number}{mark}",
            trial.shown_status,
            *(number(trial.params.get(path)) for path in paths),
            number(trial.value),
            str(trial.epochs),
            trial.job_id,
        )
    return table


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{path}={number(value)}" for path, value in params.items())
