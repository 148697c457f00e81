"""The Celery configuration shared by the API (which only sends) and the workers.

Queues are explicit (`cpu`, `gpu`); a message carries only a job id, and the `jobs` row
stays the truth, so a lost or duplicated message cannot run a job twice.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from app.config import Settings

RUN_JOB_TASK = "backprop.run_job"
QUEUES = ("cpu", "gpu")
# Longer than any job may run: a message redelivered while its job still runs finds the
# row already claimed and is dropped, but redelivery should stay rare.
VISIBILITY_TIMEOUT_SECONDS = 7 * 24 * 3600
BROKER_CONNECT_SECONDS = 2.0


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        # Each queue with its own exchange and routing key: a Queue given only a name is
        # bound to the default exchange and key (here `cpu`'s), so a message for either
        # queue would be delivered to both.
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        "task_default_queue": "cpu",
        "task_create_missing_queues": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        # A running job outlives a broker restart: its pool process supervises it through
        # the database, not the broker. The message it came in cannot be acknowledged on
        # the new connection and comes back some day; the row, claimed already, makes that
        # copy a no-op. Cancelling instead would cost the job its lease and an attempt.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        # A broker that is down or unreachable costs a send at most about 4 s, never a hang:
        # each connection attempt gives up after 2 s and a send tries twice. The caller
        # logs the failure and the reconciler sends the job again (the row says queued).
        "broker_connection_timeout": BROKER_CONNECT_SECONDS,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0.2,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            "socket_connect_timeout": BROKER_CONNECT_SECONDS,
        },
        "worker_hijack_root_logger": False,
    }
    if settings.uses_filesystem_broker:
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # Messages written whole before they appear in the folder (see app.file_broker).
        config["broker_transport"] = "app.file_broker:Transport"
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Broadcast (pidbox) exchanges; the default is ./control in the working directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # Poll the folder ten times a second, not once: an idle worker picks a job up
            # (and notices a shutdown) within a tenth of a second.
            "polling_interval": 0.1,
        }
    return config


def make_celery(settings: Settings, name: str = "backprop") -> Celery:
    celery = Celery(name)
    celery.conf.update(celery_config(settings))
    return celery


class JobQueue:
    """What the API needs of the broker: send a job id to a queue, and a health check."""

    def __init__(self, settings: Settings):
        self.celery = make_celery(settings, "backprop-api")

    def send(self, job_id: str, queue: str) -> None:
        self.celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)

    def ping(self) -> None:
        """Raise when the broker cannot be reached."""
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_CONNECT_SECONDS)
