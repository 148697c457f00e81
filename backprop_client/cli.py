"""The client commands of `backprop`: submit (and watch), status, list, metrics, cancel,
download, datasets. `app/cli.py` adds them with `add_commands`.

    backprop submit spec.json [--dataset ID|FILE] [--watch]   print the job id, or watch it
    backprop watch JOB | status JOB | list [-q] | metrics JOB [--plot] | cancel JOB
    backprop download JOB [-o PATH]
    backprop datasets upload FILE [--target COL] | datasets list [--builtin]
    backprop sweep submit sweep.yaml [--watch] | sweep watch|status|trials|cancel SWEEP
    backprop sweep list [-q] | sweep download SWEEP [-o PATH]   (the best trial's model)

The server and key come from --url/--api-key, else BACKPROP_URL/BACKPROP_API_KEY, else the
files `backprop serve` writes in its data directory (--data-dir, BACKPROP_DATA_DIR or
./.backprop), so they work right after `backprop serve` with no set-up. Heavy imports
(httpx, rich) happen inside the commands: `backprop serve` does not pay for them.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backprop_client.models import JobStatus  # dataclasses only: cheap to import

if TYPE_CHECKING:
    from rich.console import Console

    from backprop_client.client import Client
    from backprop_client.models import Job

URL_HELP = (
    "the server (default $BACKPROP_URL, else the one `backprop serve` recorded in the data "
    "directory, else http://127.0.0.1:8000)"
)
DATA_DIR_HELP = "where `backprop serve` keeps its files (default $BACKPROP_DATA_DIR or ./.backprop)"

PIPED_WIDTH = 160

Command = Callable[["Client", argparse.Namespace, "Console"], int | None]


def _run(command: Command, args: argparse.Namespace) -> None:
    """Run `command` with a client from the flags; errors become one line and exit code 1."""
    from rich.console import Console

    from backprop_client.client import Client
    from backprop_client.errors import BackpropError
    from backprop_client.specs import SpecFileError

    # Into a pipe or a file, lines are not cut to a terminal's width (rich would take 80 or
    # $COLUMNS): ids and tables stay whole for grep and scripts.
    width = None if sys.stdout.isatty() else PIPED_WIDTH
    console = Console(highlight=False, width=width)
    try:
        with Client(args.url, args.api_key, data_dir=args.data_dir) as client:
            code = command(client, args, console)
    except (BackpropError, SpecFileError, TimeoutError, OSError) as error:
        print(f"backprop: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if code:
        raise SystemExit(code)


def _print_json(body: Any) -> None:
    print(json.dumps(body, indent=2))


def submit(client: Client, args: argparse.Namespace, console: Console) -> int:
    dataset = args.dataset
    if dataset is not None and Path(dataset).is_file():
        uploaded = client.upload_dataset(dataset, target=args.target)
        print(f"uploaded {dataset} as dataset {uploaded.id}", file=sys.stderr)
        dataset = uploaded.id
    elif args.target is not None:
        problem = f"--target names a column of a file to upload; --dataset {dataset} is no file"
        print(f"backprop: error: {problem}", file=sys.stderr)
        return 2
    job = client.submit(args.spec, dataset=dataset, name=args.name)
    if not args.watch:
        print(job.id)  # only the id on stdout: JOB=$(backprop submit spec.json)
        return 0
    return _watch(client, job, console)


def watch(client: Client, args: argparse.Namespace, console: Console) -> int:
    return _watch(client, client.job(args.job), console)


def _watch(client: Client, job: Job, console: Console) -> int:
    """Show the job's progress until it ends: exit status 0 if it succeeded, else 1."""
    from backprop_client.watch import watch

    try:
        final = watch(client, job, console)
    except KeyboardInterrupt:
        print(f"\nstopped watching; the job goes on: backprop watch {job.id}", file=sys.stderr)
        return 130
    return 0 if final.status == JobStatus.SUCCEEDED else 1


def status(client: Client, args: argparse.Namespace, console: Console) -> None:
    from backprop_client.tables import job_table

    job = client.job(args.job)
    if args.json:
        _print_json(job.raw)
    else:
        console.print(job_table(job))


def list_jobs(client: Client, args: argparse.Namespace, console: Console) -> None:
    from backprop_client.tables import jobs_table

    jobs = client.jobs(status=args.status, name=args.name, limit=args.limit)
    _print_listing(jobs, jobs_table, args, console)


def metrics(client: Client, args: argparse.Namespace, console: Console) -> int:
    from backprop_client.plot import line_chart
    from backprop_client.tables import metrics_table, table_series

    found = client.metrics(args.job, names=args.name, max_points=args.max_points)
    if args.json:
        _print_json({name: vars(series) for name, series in found.series.items()})
        return 0
    missing = [name for name in args.name or [] if name not in found]
    if missing:  # the server answers an unknown name with no series, not an error
        print(
            f"backprop: error: job {args.job} has no series {', '.join(missing)}", file=sys.stderr
        )
        return 1
    if not found.names:
        print(f"job {args.job} has no metrics yet", file=sys.stderr)
        return 0
    if args.plot:
        names = args.name or [name for name in ("loss", "val_loss") if name in found]
        chosen = {name: (found[name].step, found[name].value) for name in names or found.names}
        console.print(line_chart(chosen, log_y=args.log), markup=False)
        return 0
    names = args.name or (found.names if args.all else table_series(found))
    console.print(metrics_table(found, names))
    return 0


def cancel(client: Client, args: argparse.Namespace, console: Console) -> None:
    job = client.cancel(args.job)
    console.print(f"job {job.name} ({job.id}): cancel requested, status {job.status}")


def download(client: Client, args: argparse.Namespace, console: Console) -> None:
    print(client.download(args.job, args.output))


def datasets_upload(client: Client, args: argparse.Namespace, console: Console) -> None:
    dataset = client.upload_dataset(
        args.file, name=args.name, format=args.format, target=args.target, task=args.task
    )
    shape = "×".join(str(size) for size in dataset.input_shape)
    classes = f", classes {dataset.class_names}" if dataset.class_names else ""
    print(
        f"dataset {dataset.name}: {dataset.task}, {dataset.num_examples} examples of "
        f"shape [{shape}]{classes}",
        file=sys.stderr,
    )
    print(dataset.id)  # only the id on stdout: DATASET=$(backprop datasets upload data.csv)


def datasets_list(client: Client, args: argparse.Namespace, console: Console) -> None:
    from backprop_client.tables import datasets_table

    datasets = client.datasets(builtin=args.builtin)
    _print_listing(datasets, datasets_table, args, console)


def sweep_submit(client: Client, args: argparse.Namespace, console: Console) -> int:
    sweep = client.submit_sweep(args.file, dataset=args.dataset, name=args.name)
    if not args.watch:
        print(sweep.id)  # only the id on stdout: SWEEP=$(backprop sweep submit sweep.yaml)
        return 0
    return _watch_sweep(client, sweep.id, console)


def sweep_watch(client: Client, args: argparse.Namespace, console: Console) -> int:
    return _watch_sweep(client, args.sweep, console)


def _watch_sweep(client: Client, sweep_id: str, console: Console) -> int:
    """A live table of the trials until the sweep ends: 0 if it succeeded, else 1."""
    from backprop_client.watch import watch_sweep

    try:
        final = watch_sweep(client, sweep_id, console)
    except KeyboardInterrupt:
        print(f"\nstopped watching; the sweep goes on: backprop sweep watch {sweep_id}")
        return 130
    return 0 if final.status == "succeeded" else 1


def sweep_status(client: Client, args: argparse.Namespace, console: Console) -> None:
    from backprop_client.tables import sweep_table

    sweep = client.sweep(args.sweep)
    if args.json:
        _print_json(sweep.raw)
    else:
        console.print(sweep_table(sweep))


def sweep_trials(client: Client, args: argparse.Namespace, console: Console) -> None:
    from backprop_client.tables import trials_table

    trials = client.trials(args.sweep)
    if args.json:
        _print_json([trial.raw for trial in trials])
    else:
        console.print(trials_table(trials, client.sweep(args.sweep)))


def sweep_list(client: Client, args: argparse.Namespace, console: Console) -> None:
    from backprop_client.tables import sweeps_table

    sweeps = client.sweeps(status=args.status, limit=args.limit)
    _print_listing(sweeps, sweeps_table, args, console)


def sweep_cancel(client: Client, args: argparse.Namespace, console: Console) -> None:
    sweep = client.cancel_sweep(args.sweep)
    console.print(f"sweep {sweep.name} ({sweep.id}): {sweep.status}")


def sweep_download(client: Client, args: argparse.Namespace, console: Console) -> None:
    print(client.download_best(args.sweep, args.output))


def _print_listing(
    items: Sequence[Any], table: Callable[[Any], Any], args: argparse.Namespace, console: Console
) -> None:
    """Ids only (`--quiet`, for scripts), the API's JSON (`--json`), or a table."""
    if args.quiet:
        print("\n".join(item.id for item in items))
    elif args.json:
        _print_json([item.raw for item in items])
    else:
        console.print(table(items))


def add_commands(commands: Any) -> None:
    """Add the client commands to `commands`, an `ArgumentParser.add_subparsers()` result."""

    def command(parent: Any, name: str, run: Command, help: str, **kw: Any) -> Any:
        sub = parent.add_parser(name, help=help, description=help, **kw)
        sub.add_argument("--url", help=URL_HELP)
        sub.add_argument("--api-key", help="default $BACKPROP_API_KEY, else <data dir>/api_key")
        sub.add_argument("--data-dir", help=DATA_DIR_HELP)
        sub.set_defaults(run=functools.partial(_run, run))
        return sub

    def json_flag(sub: Any) -> None:
        sub.add_argument("--json", action="store_true", help="print the API's JSON")

    def quiet_flag(sub: Any) -> None:
        sub.add_argument("-q", "--quiet", action="store_true", help="print only the ids")

    sub = command(commands, "submit", submit, "submit a job spec (JSON or YAML file)")
    sub.add_argument("spec", help="the JobSpec file (.json, .yaml)")
    sub.add_argument("--dataset", help="a dataset id or builtin:<name>, or a file to upload")
    sub.add_argument("--target", help="with a CSV file as --dataset: its target column")
    sub.add_argument("--name", help="the job's name (default: the spec's)")
    sub.add_argument("--watch", action="store_true", help="show progress until the job ends")
    sub = command(commands, "watch", watch, "show a job's progress until it ends")
    sub.add_argument("job", help="the job's id")
    sub = command(commands, "status", status, "show a job")
    sub.add_argument("job", help="the job's id")
    json_flag(sub)
    sub = command(commands, "list", list_jobs, "list jobs, newest first")
    sub.add_argument("--status", choices=[status.value for status in JobStatus])
    sub.add_argument("--name", help="only jobs with this name")
    sub.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    json_flag(sub)
    quiet_flag(sub)
    sub = command(
        commands, "metrics", metrics, "a job's metrics: a table or a chart", aliases=["logs"]
    )
    sub.add_argument("job", help="the job's id")
    sub.add_argument("--name", action="append", help="a series to show (repeatable)")
    sub.add_argument("--all", action="store_true", help="every series in the table")
    sub.add_argument("--plot", action="store_true", help="a terminal line chart (loss, val_loss)")
    sub.add_argument("--log", action="store_true", help="with --plot: a log y axis")
    sub.add_argument("--max-points", type=int, help="downsample each series on the server")
    json_flag(sub)
    sub = command(commands, "cancel", cancel, "cancel a queued or running job")
    sub.add_argument("job", help="the job's id")
    sub = command(commands, "download", download, "save a job's model (.safetensors)")
    sub.add_argument("job", help="the job's id")
    sub.add_argument("-o", "--output", help="file or directory (default ./<job name>.safetensors)")

    datasets = commands.add_parser("datasets", help="upload and list datasets")
    data_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    sub = command(data_commands, "upload", datasets_upload, "upload a csv, npz or zip file")
    sub.add_argument("file")
    sub.add_argument("--name", help="default: the file name without its extension")
    sub.add_argument("--format", choices=("csv", "npz", "image_zip"), help="default: by name")
    sub.add_argument("--target", help="CSV: the target column (default the last)")
    sub.add_argument("--task", choices=("classification", "regression"))
    sub = command(data_commands, "list", datasets_list, "list your datasets")
    sub.add_argument("--builtin", action="store_true", help="the built-in datasets instead")
    json_flag(sub)
    quiet_flag(sub)

    sweep = commands.add_parser("sweep", help="hyperparameter sweeps: submit, watch, list")
    sweep_commands = sweep.add_subparsers(dest="sweep_command", required=True)
    sub = command(sweep_commands, "submit", sweep_submit, "start a sweep (JSON or YAML file)")
    sub.add_argument("file", help="the sweep body: spec, parameters, method, metric…")
    sub.add_argument("--dataset", help="a dataset id or builtin:<name> for the base spec")
    sub.add_argument("--name", help="the sweep's name (default: the file's)")
    sub.add_argument("--watch", action="store_true", help="a live table of trials until it ends")
    for name, run, text in [
        ("watch", sweep_watch, "a live table of a sweep's trials until it ends"),
        ("status", sweep_status, "show a sweep"),
        ("trials", sweep_trials, "a sweep's trials: values, status, metric"),
        ("cancel", sweep_cancel, "cancel a sweep and its queued and running trials"),
        ("download", sweep_download, "save the best trial's model (.safetensors)"),
    ]:
        sub = command(sweep_commands, name, run, text)
        sub.add_argument("sweep", help="the sweep's id")
        if name in ("status", "trials"):
            json_flag(sub)
        if name == "download":
            sub.add_argument("-o", "--output", help="file or directory (default ./<job name>…)")
    sub = command(sweep_commands, "list", sweep_list, "list sweeps, newest first")
    sub.add_argument("--status", choices=("running", "succeeded", "cancelled"))
    sub.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    json_flag(sub)
    quiet_flag(sub)
