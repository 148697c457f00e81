"""How a training process ended without reporting a result, and whose doing it was.

The supervisor counts the two apart (`app.domain.leases.LossCause`): a kill of the
platform's making re-queues the job with the same attempt and one more platform
interruption; a crash of the job's own making uses up an attempt.
"""

from __future__ import annotations

import signal

from app.domain.leases import LossCause
from worker.train_process import EXIT_ORPHANED, EXIT_SUSPENDED

# Signals that end a training process from outside: the platform's doing, not the job's.
PLATFORM_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def cause_of_exit(returncode: int | None) -> LossCause:
    """Who is to blame for a training process that exited without reporting a result.

    The platform: a kill from outside (SIGKILL, as the OOM killer sends; SIGTERM, SIGINT
    or SIGHUP, which it turns into a stop after a checkpoint), a child orphaned by its
    supervisor, or one that suspended without a shutdown. The job: any other exit status
    (an exception its code path could not report) or a fatal signal of its own (SIGSEGV,
    SIGABRT, SIGBUS, SIGFPE, SIGILL…).
    """
    if returncode is None or returncode in (EXIT_ORPHANED, EXIT_SUSPENDED):
        return LossCause.PLATFORM
    if returncode < 0 and -returncode in PLATFORM_SIGNALS:
        return LossCause.PLATFORM
    return LossCause.CRASH


def describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    if returncode == EXIT_ORPHANED:
        return "exited when it lost its supervisor"
    if returncode == EXIT_SUSPENDED:
        return "was stopped by a signal after a checkpoint"
    return f"exited with status {returncode} without reporting a result"
