"""`python -m worker [--queues cpu,gpu] [--concurrency N]`: start a Celery worker.

Configuration comes from the `BACKPROP_*` environment (database, broker, data directory).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from app.config import Settings
from app.queue import QUEUES
from worker.celery_app import start_worker


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu or both")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs run at once")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    queues = [queue.strip() for queue in args.queues.split(",") if queue.strip()]
    if not queues or not set(queues) <= set(QUEUES):
        parser.error(f"--queues: give one or more of {', '.join(QUEUES)}")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    start_worker(Settings(), queues, args.concurrency, args.loglevel.upper())


if __name__ == "__main__":
    main()
