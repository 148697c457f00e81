"""The Celery tasks. Thin, like views: take an id, let a service do the work."""

from __future__ import annotations

from celery import Celery

from app.config import Settings
from app.queue import RUN_JOB_TASK
from worker.registry import WorkerIdentity
from worker.supervisor import supervise_job


def register_tasks(celery: Celery, settings: Settings, identity: WorkerIdentity) -> None:
    def send(job_id: str, queue: str) -> None:
        celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)

    # shared=False: a shared task would be added to every Celery app created afterwards,
    # with this app's settings captured.
    @celery.task(name=RUN_JOB_TASK, ignore_result=True, shared=False)
    def run_job(job_id: str) -> str:  # an Outcome
        """Run job `job_id` if it is still queued; the `jobs` row decides, not the message."""
        return supervise_job(job_id, settings=settings, identity=identity, send=send)
