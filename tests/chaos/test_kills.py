"""Kills of the platform's making: training processes SIGKILLed again and again, the whole
`backprop serve` stopped with SIGTERM mid-job, and many clients at once.

A kill from outside is not the job's fault: it is re-queued with the same `attempt` and
`platform_interruptions` + 1, and resumes from its checkpoint. A stop asks the training
process to checkpoint first and hands the job back (neither count changes); the next start
claims it at once. Every scenario ends the same way: the job succeeded, each metric point
written once (none lost, none twice), and its model bit-identical to an uninterrupted run
of the same spec and seed.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import pytest

from core.export import import_model
from tests.integration.client import BackpropClient, JobStore
from tests.integration.deployments import API_KEY, EmbeddedDeployment, ServerDeployment
from tests.integration.processes import ManagedProcess, Processes
from tests.servers import PostgresServer, RedisServer, wait_until
from tests.specs import LONG_DIGITS_MLP, xor_mlp

pytestmark = pytest.mark.xdist_group("chaos-kills")

JOB_SECONDS = 180  # a bound, not an expectation
KILLS = 20
EPOCH_SERIES = ("epoch_loss", "accuracy")  # recorded once per epoch (docs/engine.md)
TIMING_SERIES = ("epoch_seconds", "samples_per_second")  # measured, not computed


def _spec(epochs: int, **training: Any) -> dict[str, Any]:
    """LONG_DIGITS_MLP (about a quarter of a second per epoch) for `epochs` epochs."""
    return {
        **LONG_DIGITS_MLP,
        "training": {**LONG_DIGITS_MLP["training"], "epochs": epochs, **training},
    }


def _points(client: BackpropClient, job_id: str) -> list[tuple[str, int, int, float | None]]:
    """Every metric point of the job as (series, step, epoch, value), in series order; the
    values of timing series (which differ from run to run) as None."""
    return [
        (name, step, epoch, None if name in TIMING_SERIES else value)
        for name, series in client.metrics(job_id).items()
        for step, epoch, value in zip(series["step"], series["epoch"], series["value"], strict=True)
    ]


def _assert_same_run(client: BackpropClient, job_id: str, reference_id: str) -> None:
    """`job_id` trained exactly as the uninterrupted `reference_id`: bit-identical tensors
    and the same metric points, each once (a lost epoch is a gap, a rerun one a duplicate
    or a changed value). Not the files' bytes: safetensors writes the metadata's keys in
    an order that differs from one process to the next."""
    model, expected = (import_model(client.model(job)) for job in (job_id, reference_id))
    assert model[2] == expected[2]  # the spec
    leaves, expected_leaves = (jax.tree.leaves(m[:2]) for m in (model, expected))
    assert len(leaves) == len(expected_leaves)
    for leaf, expected_leaf in zip(leaves, expected_leaves, strict=True):
        assert leaf.dtype == expected_leaf.dtype and leaf.tobytes() == expected_leaf.tobytes()
    points = _points(client, job_id)
    assert len(set(points)) == len(points)
    assert points == _points(client, reference_id)


def _oldest_training_process(group: ManagedProcess) -> int:
    """The training process running the job, on a one-slot worker: of its
    `worker.train_process`es, the job's was started before the warm spares (each take
    hands out the oldest spare and starts a new one)."""

    def started(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time in ticks

    pids = [pid for pid, cmd in group.group_commands().items() if "worker.train_process" in cmd]
    assert pids, "no training process"
    return min(pids, key=started)


def _resumed(store: JobStore, job_id: str, kills: int, after: int) -> dict[str, Any] | None:
    """The job row once it has been interrupted `kills` times and has recorded a checkpoint
    past epoch `after`; an error if it ended first."""
    job = store.job(job_id)
    if job["status"] in ("succeeded", "failed", "cancelled"):
        raise AssertionError(f"job ended {job['status']} after {kills} kills: {job['error']}")
    progressed = job["platform_interruptions"] == kills and (job["checkpoint_epoch"] or 0) > after
    return job if progressed else None


def test_twenty_sigkills_of_the_training_process_cost_no_attempt_and_no_epoch(
    processes: Processes, postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Two warm spares: the next training process is usually ready when a kill comes.
    deployment = ServerDeployment(
        processes, postgres, redis_server, tmp_path, BACKPROP_WARM_SPARES="2"
    )
    client, store = deployment.client, deployment.store
    try:
        spec = _spec(epochs=60)  # a checkpoint after every epoch
        job_id = client.submit(spec)["id"]
        checkpoint = 0
        for kill in range(KILLS):
            # Progress since the last kill: the resumed run recorded a newer checkpoint.
            job = wait_until(
                lambda: _resumed(store, job_id, kill, checkpoint),  # noqa: B023
                JOB_SECONDS,
                interval=0.01,
                what=f"progress before kill {kill + 1}",
            )
            checkpoint = job["checkpoint_epoch"]
            os.kill(_oldest_training_process(deployment.worker), signal.SIGKILL)
            wait_until(
                lambda: store.job(job_id)["platform_interruptions"] == kill + 1,  # noqa: B023
                30,
                what=f"kill {kill + 1} to be counted",
            )

        job = client.wait_for_job(job_id, "succeeded", JOB_SECONDS)
        assert (job["attempt"], job["platform_interruptions"]) == (1, KILLS)
        assert job["error"] is None and job["summary"]["epochs_completed"] == 60
        assert checkpoint < 60  # the last kill came before the end

        reference = client.submit(spec)["id"]
        assert client.wait_for_job(reference, "succeeded", JOB_SECONDS)["attempt"] == 1
        _assert_same_run(client, job_id, reference)
    finally:
        deployment.close()


GRACE_SECONDS = 10
LEASE_SECONDS = 60  # long: a handed-back job must not wait for a lease to expire


def test_sigterm_to_serve_hands_the_job_back_after_a_checkpoint_and_a_restart_resumes_it(
    processes: Processes, tmp_path: Path
) -> None:
    deployment = EmbeddedDeployment(
        processes,
        tmp_path,
        BACKPROP_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
        BACKPROP_LEASE_SECONDS=str(LEASE_SECONDS),
    )
    store = deployment.store
    try:
        # No periodic checkpoint within the test: the only one is the shutdown's.
        spec = _spec(epochs=40, checkpoint_every_epochs=None, checkpoint_every_seconds=3600)
        job_id = deployment.client.submit(spec)["id"]
        deployment.client.wait_for_progress(job_id, epoch=3, timeout=JOB_SECONDS)
        assert store.job(job_id)["checkpoint_epoch"] is None

        serve = deployment.server
        stopping = time.monotonic()
        serve.signal_group(signal.SIGTERM)  # a service manager stopping the whole group
        assert serve.popen.wait(GRACE_SECONDS + 5) == 0, serve.log_tail()
        stopped_in = time.monotonic() - stopping
        wait_until(lambda: not serve.group_members(), 10, what="serve's processes to exit")
        stopped = store.job(job_id)
        assert (stopped["status"], stopped["attempt"], stopped["platform_interruptions"]) == (
            "queued",
            1,
            0,
        ), stopped
        checkpoint = stopped["checkpoint_epoch"]
        assert checkpoint is not None and 3 <= checkpoint < 40, stopped
        files = list((deployment.data_dir / "jobs" / job_id / "checkpoints").glob("ckpt-*"))
        assert [f.name for f in files] == [f"ckpt-{checkpoint:06d}.npz"]
        assert stopped_in < GRACE_SECONDS + 5

        deployment.start_worker()  # `backprop serve` again: /readyz answers
        restarted = time.monotonic()
        wait_until(
            lambda: store.job(job_id)["status"] != "queued", LEASE_SECONDS / 3, what="a claim"
        )
        claimed_in = time.monotonic() - restarted
        job = deployment.client.wait_for_job(job_id, "succeeded", JOB_SECONDS)
        assert (job["attempt"], job["platform_interruptions"]) == (1, 0)
        assert job["summary"]["epochs_completed"] == 40
        assert claimed_in < LEASE_SECONDS / 3

        reference = deployment.client.submit(spec)["id"]
        deployment.client.wait_for_job(reference, "succeeded", JOB_SECONDS)
        _assert_same_run(deployment.client, job_id, reference)
    finally:
        deployment.close()


JOBS = 50
CLIENTS = 4


def test_fifty_small_jobs_from_four_clients_each_run_exactly_once(
    processes: Processes, postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    deployment = ServerDeployment(processes, postgres, redis_server, tmp_path, worker_concurrency=2)
    base_url = str(deployment.client.http.base_url)
    spec = xor_mlp(epochs=10)
    submitted: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def one_client(count: int) -> None:
        client = BackpropClient(base_url, API_KEY)
        try:
            mine = [client.submit(spec)["id"] for _ in range(count)]
            with lock:
                submitted.extend(mine)
            for job_id in mine:
                # Polled twice a second: four clients at 10 polls/s each would take a core
                # from the worker on a small machine.
                client.wait_for_job(job_id, "succeeded", JOB_SECONDS, interval=0.5)
        except BaseException as exc:  # re-raised by the test's thread below
            failures.append(exc)
        finally:
            client.close()

    shares = [JOBS // CLIENTS + (i < JOBS % CLIENTS) for i in range(CLIENTS)]
    threads = [threading.Thread(target=one_client, args=(n,)) for n in shares]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOB_SECONDS * 2)
        if failures:
            raise failures[0]
        assert len(set(submitted)) == JOBS

        log = deployment.worker.log_path.read_text(errors="replace")
        claims = re.findall(r"job (\S+) \(attempt \d+\) claimed by", log)
        for job_id in submitted:
            job = deployment.client.job(job_id)
            assert (job["status"], job["attempt"], job["platform_interruptions"]) == (
                "succeeded",
                1,
                0,
            ), job
            assert claims.count(job_id) == 1, job_id
            rows, distinct = deployment.store.metric_counts(job_id)
            assert rows == distinct
            series = deployment.client.metrics(job_id)
            for name in EPOCH_SERIES:
                assert series[name]["epoch"] == list(range(10)), (job_id, name)
            assert series["loss"]["step"] == list(range(1, 11)), job_id
        assert len({job["worker"] for job in map(deployment.client.job, submitted)}) == 2
    finally:
        deployment.close()
