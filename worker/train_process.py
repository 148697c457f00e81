"""The training process: `python -m worker.train_process JOB_ID --worker NAME --attempt N`.

Started by `worker.supervisor` for one job, with the worker's Settings as one JSON line on
stdin. stdin then stays open; EOF means the supervisor is gone, and this process exits
at once rather than train a job nobody watches (its lease will expire and the reconciler
re-queues it). This is the only process that imports JAX.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence

from app.config import Settings

EXIT_ORPHANED = 3


def _exit_when_orphaned() -> None:
    def watch() -> None:
        for _ in sys.stdin:
            pass
        logging.getLogger(__name__).warning("the supervising worker is gone; exiting")
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.train_process")
    parser.add_argument("job_id")
    parser.add_argument("--worker", required=True, help="the slot that claimed the job")
    parser.add_argument("--attempt", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings.model_validate_json(sys.stdin.readline())
    _exit_when_orphaned()
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s train[{args.job_id[:8]}] %(name)s: %(message)s",
    )
    from worker.runner import run_claimed_job  # JAX is imported here, in this process only

    run_claimed_job(settings, args.job_id, worker=args.worker, attempt=args.attempt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
