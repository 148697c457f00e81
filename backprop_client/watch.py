"""`backprop submit --watch`: a job's progress as it trains, then its final metrics.

In a terminal a rich progress bar shows the epoch, the latest loss and validation metrics
and the server's ETA; elsewhere (a pipe, CI logs) one line per epoch. Either way the final
summary is printed as plain lines.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from backprop_client.client import Client
from backprop_client.events import Event
from backprop_client.models import Job, JobStatus, Sweep, Trial
from backprop_client.tables import duration, number, summary_lines


class _Latest:
    """The job's state as the events tell it: status, epoch, ETA, each series' last value."""

    def __init__(self, job: Job):
        self.job = job
        self.values: dict[str, float | None] = {}
        self.epoch = (0, int(job.spec.get("training", {}).get("epochs", 0)))
        self.fraction = 0.0
        self.eta: float | None = None

    def update(self, event: Event) -> None:
        if event.event == "status":
            self.job = Job.from_json(event.data)
        elif event.event == "progress" and event.data.get("progress"):
            progress = event.data["progress"]
            self.epoch = (progress["epoch"], progress["epochs"])
            self.fraction = progress["fraction"]
            self.eta = event.data.get("eta_seconds")
        elif event.event == "metrics":
            for series in event.data["series"]:
                self.values[series["name"]] = series["value"][-1]

    def shown_metrics(self) -> str:
        """The latest loss, then the validation metrics (else the training ones)."""
        names = sorted(name for name in self.values if name.startswith("val_"))
        if not names:
            names = [name for name in self._spec_metrics() if name in self.values]
        first = ["loss", "val_loss"]
        shown = [name for name in dict.fromkeys([*first, *names]) if name in self.values]
        return "  ".join(f"{name} {number(self.values[name])}" for name in shown)

    def _spec_metrics(self) -> list[str]:
        """The spec's metric names: `"accuracy"`, or `{"type": "accuracy", …}` once the
        server has filled in the defaults."""
        entries = self.job.spec.get("metrics") or []
        return [entry if isinstance(entry, str) else entry.get("type", "") for entry in entries]

    def epoch_text(self) -> str:
        return f"epoch {self.epoch[0]}/{self.epoch[1]}"

    def eta_text(self) -> str:
        return f"eta {duration(self.eta)}" if self.eta is not None else ""


def watch(client: Client, job: Job, console: Console) -> Job:
    """Follow `job` until it ends, showing its progress; the finished job."""
    latest = _Latest(job)
    console.print(f"job {job.name} ({job.id}) {job.status}", highlight=False)
    if console.is_terminal:
        _watch_with_bar(client, latest, console)
    else:
        _watch_with_lines(client, latest, console)
    final = latest.job if latest.job.finished else client.job(job)
    for line in summary_lines(final):
        console.print(line, highlight=False, soft_wrap=True)
    return final


def _watch_with_bar(client: Client, latest: _Latest, console: Console) -> None:
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[epoch]}"),
        TextColumn("{task.fields[metrics]}"),
        TextColumn("{task.fields[eta]}"),
        console=console,
    )
    with bar:
        task = bar.add_task(latest.job.status, total=1.0, epoch="", metrics="", eta="")
        for event in client.stream(latest.job):
            latest.update(event)
            fields: dict[str, Any] = {
                "epoch": latest.epoch_text(),
                "metrics": latest.shown_metrics(),
                "eta": latest.eta_text(),
            }
            done = 1.0 if latest.job.status == JobStatus.SUCCEEDED else latest.fraction
            bar.update(task, completed=done, description=latest.job.status, **fields)


def _watch_with_lines(client: Client, latest: _Latest, console: Console) -> None:
    shown_epoch = -1
    for event in client.stream(latest.job):
        status = latest.job.status
        latest.update(event)
        if event.event == "status" and latest.job.status != status:
            console.print(f"status: {latest.job.status}", highlight=False)
        if event.event == "progress" and latest.epoch[0] > shown_epoch:
            shown_epoch = latest.epoch[0]
            parts = (latest.epoch_text(), latest.shown_metrics(), latest.eta_text())
            console.print("  ".join(part for part in parts if part), highlight=False)


def watch_sweep(client: Client, sweep_id: str, console: Console) -> Sweep:
    """The trials table, live in a terminal; elsewhere a line per trial as it changes.
    Returns the ended sweep."""
    from rich.live import Live

    from backprop_client.sweep_events import sweep_ended
    from backprop_client.tables import best_value, sweep_table, trials_done, trials_table

    sweep = client.sweep(sweep_id)
    trials: dict[int, Trial] = {}

    def view() -> Any:
        return trials_table(sorted(trials.values(), key=lambda t: t.number), sweep)

    def update(event: Event) -> Trial | None:
        nonlocal sweep
        if event.event == "sweep":
            sweep = Sweep.from_json(event.data)
            return None
        trial = Trial.from_json(event.data)
        trials[trial.number] = trial
        return trial

    if console.is_terminal:
        with Live(view(), console=console, refresh_per_second=4) as live:
            for event in client.stream_sweep(sweep_id):
                update(event)
                live.update(view())
    else:
        for event in client.stream_sweep(sweep_id):
            trial = update(event)
            if trial is not None:
                value = f" {sweep.metric.get('name')} {number(trial.value)}" if trial.value else ""
                print(f"trial {trial.number} {trial.shown_status}{value}", flush=True)
            elif sweep_ended(event):
                break
    console.print(sweep_table(sweep))
    print(
        f"sweep {sweep.name} ({sweep.id}) {sweep.status}: {trials_done(sweep)} trials, "
        f"best {best_value(sweep) or 'none'}"
    )
    return sweep
