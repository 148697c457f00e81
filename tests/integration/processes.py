"""Backprop's own processes, started by the integration and end-to-end tests.

`ManagedProcess` runs a command (`backprop api`, `backprop worker`, `backprop serve`) in a
session of its own, so that a test can signal or SIGKILL its whole process group (a Celery
worker's main process, its pool process and the training process). Output goes to a log
file; the `processes` fixture stops every process when the test ends and attaches the
logs to the report of a test that failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import wait_until

LOG_TAIL_CHARS = 8000


def backprop_command(*args: str) -> list[str]:
    """`backprop ARGS` from the environment the tests run in (the console script installed
    beside this interpreter, else the module)."""
    script = Path(sys.executable).with_name("backprop")
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", "app.cli", *args]


def clean_environment(**overrides: str) -> dict[str, str]:
    """This process's environment without any `BACKPROP_*` setting, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


class ManagedProcess:
    """A child process in a new session (its pid is its process group id), logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_dir: Path,
    ):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.popen.pid

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def group_members(self) -> list[int]:
        """Live (not zombie) processes of the group."""
        return [pid for pid, state in _group_processes(self.pgid) if state != "Z"]

    def group_commands(self) -> dict[int, str]:
        """The command lines of the group's live processes."""
        commands = {}
        for pid in self.group_members():
            with suppress(OSError):
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                commands[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        return commands

    def signal_group(self, sig: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def kill_group(self) -> None:
        """SIGKILL every process of the group at once (a crash, not a shutdown)."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(30)
        wait_until(lambda: not self.group_members(), 10, what=f"{self.name}'s processes to die")

    def stop(self, grace: float = 3) -> None:
        """SIGTERM the group, then SIGKILL whatever is left of it after `grace` seconds."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self.signal_group(signal.SIGKILL)
        self.popen.wait(30)


def _group_processes(pgid: int) -> Iterator[tuple[int, str]]:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, …
            yield int(entry.name), fields[0]


@dataclass
class Processes:
    """The processes a test started: stopped at its end, their logs shown if it failed."""

    log_dir: Path
    started: list[ManagedProcess] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, env=env, cwd=cwd, log_dir=self.log_dir)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()

    def log_sections(self) -> list[tuple[str, str]]:
        return [(f"log of {p.name} ({p.log_path})", p.log_tail()) for p in self.started]


PROCESSES = pytest.StashKey[Processes]()


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Start processes through this; they are stopped when the test ends."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    registry = Processes(log_dir)
    request.node.stash[PROCESSES] = registry
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the logs of the test's processes to a failed test's report."""
    report = yield
    registry = item.stash.get(PROCESSES, None)
    if registry is not None and report.failed and call.when in ("setup", "call"):
        for title, text in registry.log_sections():
            report.sections.append((title, text))
    return report
