"""`backprop`: start the service or its pieces, run migrations, create API keys.

    backprop serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR]   embedded: API + one worker
    backprop api [--host] [--port] [--workers N]                       the API only
    backprop worker [--queues cpu,gpu] [--concurrency N]               a worker only
    backprop migrate                                                   apply database migrations
    backprop keys create --tenant NAME                                 print a new API key
    backprop keys list | keys revoke KEY_OR_ID                         list or revoke keys
    backprop storage migrate --to s3://bucket/prefix                   move the stored files
    backprop submit | watch | status | list | metrics | cancel | download | datasets  client

Settings come from `BACKPROP_*` environment variables; `--data-dir` sets BACKPROP_DATA_DIR.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import Settings
from backprop_client.cli import add_commands as add_client_commands
from backprop_client.connection import record_server

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Beyond BACKPROP_SHUTDOWN_GRACE_SECONDS (running jobs checkpoint and are handed back
# within it): Celery's own warm shutdown, which takes a few seconds.
WORKER_STOP_MARGIN_SECONDS = 10
WORKER_STOP_SECONDS = 20 + WORKER_STOP_MARGIN_SECONDS  # with the default grace


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "data_dir", None):
        # Exported, so the worker processes started from here see the same directory.
        os.environ["BACKPROP_DATA_DIR"] = str(Path(args.data_dir).resolve())
    return Settings()


def migrate(args: argparse.Namespace) -> None:
    from app.domain.db.migrate import upgrade_to_head

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url)
    print(f"database at head: {_redacted(settings.resolved_database_url)}", file=sys.stderr)


@contextmanager
def _database(settings: Settings) -> Iterator[Session]:
    """One transaction on the configured database, for the `keys` commands."""
    from app.domain.db.engine import make_engine, make_sessionmaker, transaction

    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def keys_create(args: argparse.Namespace) -> None:
    from app.auth import create_api_key

    with _database(_settings(args)) as session:
        key = create_api_key(session, args.tenant)
    print(key)  # only the key on stdout, so scripts can capture it


def keys_list(args: argparse.Namespace) -> None:
    from app.auth import list_api_keys

    def when(moment: datetime | None) -> str:
        return moment.isoformat(timespec="seconds") if moment else ""

    with _database(_settings(args)) as session:
        rows = [
            (
                key.id,
                key.prefix + "…",
                tenant,
                when(key.created_at),
                when(key.last_used_at),
                when(key.revoked_at),
            )
            for key, tenant in list_api_keys(session, tenant=args.tenant)
        ]
    print("\t".join(("id", "key", "tenant", "created", "last_used", "revoked")))
    for row in rows:
        print("\t".join(row))


def storage_migrate(args: argparse.Namespace) -> None:
    """Copy the stored files the database names to the store `--to` (see
    app/domain/storage_migration.py); the rows need no change, their keys are relative."""
    from app.domain.storage import storage_for
    from app.domain.storage_migration import migrate_storage

    settings = _settings(args)
    source = storage_for(settings)
    target = storage_for(settings.model_copy(update={"storage_url": args.to}))
    if target.url == source.url:
        print("backprop: error: --to names the store already in use", file=sys.stderr)
        raise SystemExit(2)
    print(f"copying from {source.url} to {target.url}", file=sys.stderr)
    with _database(settings) as session:
        report = migrate_storage(
            session, source, target, progress=lambda key: print(f"  {key}", file=sys.stderr)
        )
    print(
        f"copied {report.copied} files ({report.bytes_copied:,} bytes), {report.skipped} "
        "already there",
        file=sys.stderr,
    )
    if report.missing:
        print(f"missing from {source.url} (not copied): {', '.join(report.missing)}")
        raise SystemExit(1)
    print(f"now run every process with BACKPROP_STORAGE_URL={target.url}", file=sys.stderr)


def keys_revoke(args: argparse.Namespace) -> None:
    from app.auth import revoke_api_key
    from app.domain.db.types import utcnow

    settings = _settings(args)
    with _database(settings) as session:
        key = revoke_api_key(session, args.key, utcnow())
        found = None if key is None else (key.id, key.prefix)
    if found is None:
        print("backprop: error: no such key (give the key itself or its id)", file=sys.stderr)
        raise SystemExit(1)
    print(
        f"revoked key {found[0]} ({found[1]}…); API processes refuse it, and end its "
        "event streams, within a second",
        file=sys.stderr,
    )


def api(args: argparse.Namespace) -> None:
    import uvicorn

    from app.main import create_app
    from app.services.events.server import run_api
    from app.services.monitoring import MULTIPROCESS_DIR_VARIABLE

    settings = _settings(args)
    if args.workers <= 1:
        run_api(create_app(settings), host=args.host, port=args.port)
        return
    # Several processes (the GIL bounds one): each builds its app from the environment,
    # which `_settings` has already completed, and keeps its Prometheus series in files
    # that every process's `/metrics` sums (app/services/monitoring).
    metrics_dir = tempfile.mkdtemp(prefix="backprop-api-metrics-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = metrics_dir
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=args.port,
            log_level="info",
            # Open event streams last until their jobs end: cut them off (clients resume
            # with Last-Event-ID) rather than wait. One process ends them more cleanly.
            timeout_graceful_shutdown=3,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker(args: argparse.Namespace) -> None:
    _settings(args)
    argv = [
        sys.executable,
        "-m",
        "worker",
        "--queues",
        args.queues,
        "--concurrency",
        str(args.concurrency),
    ]
    os.execv(sys.executable, argv)


def serve(args: argparse.Namespace) -> None:
    """Embedded mode: migrations, a key for a new user, one worker process and the API."""
    from app.main import create_app
    from app.services.events.server import run_api

    settings = _settings(args)
    migrate(args)
    _announce_key(settings)
    queues = "cpu,gpu" if _has_gpu() else "cpu"
    worker_process = subprocess.Popen(
        [sys.executable, "-m", "worker", "--queues", queues], preexec_fn=_stop_with_parent
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; for SIGTERM the
    # default action would kill this process before `finally` stops the worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Where the client commands (`backprop submit` …) find this server with no set-up.
    server_file = record_server(settings.data_dir, args.host, args.port, os.getpid())
    try:
        run_api(create_app(settings), host=args.host, port=args.port)
    finally:
        server_file.unlink(missing_ok=True)
        _stop(worker_process, settings.shutdown_grace_seconds + WORKER_STOP_MARGIN_SECONDS)


def _announce_key(settings: Settings) -> None:
    """Make sure a new user has a key to paste into curl, and say where it is."""
    from app.auth import create_api_key
    from app.domain.db.engine import make_engine, make_sessionmaker, transaction

    if settings.bootstrap_api_key:
        return  # create_app ensures it at start-up
    key_file = settings.data_dir / "api_key"
    if not key_file.exists():
        engine = make_engine(settings.resolved_database_url)
        with transaction(make_sessionmaker(engine)) as session:
            key = create_api_key(session, "default")
        engine.dispose()
        key_file.touch(mode=0o600)
        key_file.write_text(key + "\n")
    key = key_file.read_text().strip()
    print(f"API key (saved in {key_file}): {key}", flush=True)


def _stop_with_parent() -> None:
    """In the worker child: get SIGTERM when `serve` dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _has_gpu() -> bool:
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return False
    result = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "GPU" in result.stdout


def _stop(process: subprocess.Popen[bytes], seconds: float = WORKER_STOP_SECONDS) -> None:
    """Warm-stop the worker (SIGTERM lets a running job checkpoint), then kill it after
    `seconds`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _redacted(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, run: Callable[[argparse.Namespace], None], help: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--data-dir", help="data directory (default $BACKPROP_DATA_DIR or ./.backprop)"
        )
        sub.set_defaults(run=run)
        return sub

    servers = {}
    for name, run, help in (
        ("serve", serve, "embedded mode: the API and one worker"),
        ("api", api, "the REST API"),
    ):
        servers[name] = sub = command(name, run, help)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
    servers["api"].add_argument(
        "--workers", type=int, default=1, help="API processes (default 1; about one per core)"
    )
    work = command("worker", worker, "a Celery worker that trains jobs")
    work.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu")
    work.add_argument("--concurrency", type=int, default=1)
    command("migrate", migrate, "apply the database migrations")
    keys = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create an API key and print it")
    create.add_argument("--tenant", required=True)
    create.add_argument("--data-dir")
    create.set_defaults(run=keys_create)
    listing = keys.add_parser("list", help="list API keys (their ids and first characters)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--data-dir")
    listing.set_defaults(run=keys_list)
    revoke = keys.add_parser("revoke", help="revoke an API key")
    revoke.add_argument(
        "key", help="the key itself, or its id or first characters (from `backprop keys list`)"
    )
    revoke.add_argument("--data-dir")
    revoke.set_defaults(run=keys_revoke)
    storage = commands.add_parser(
        "storage", help="the store of datasets and models"
    ).add_subparsers(dest="storage_command", required=True)
    moving = storage.add_parser(
        "migrate", help="copy the stored files to another store (s3://bucket/prefix or a path)"
    )
    moving.add_argument("--to", required=True, help="the new BACKPROP_STORAGE_URL")
    moving.add_argument("--data-dir")
    moving.set_defaults(run=storage_migrate)
    add_client_commands(commands)  # submit, status, list, metrics… (backprop_client/cli.py)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
