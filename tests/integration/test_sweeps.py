"""A sweep through real processes on PostgreSQL and Redis: its budget holds while the API
(and with it a reconciler running the controller) is killed and restarted mid-sweep."""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.deployments import ServerDeployment
from tests.servers import wait_until
from tests.specs import xor_mlp

SWEEP_SECONDS = 300  # a bound: eight trials of a few hundred tiny epochs
MAX_TRIALS, MAX_CONCURRENT = 8, 2
ACTIVE = ("queued", "running")


@pytest.mark.parametrize("deployment", ["server"], indirect=True)
def test_a_sweep_keeps_max_concurrent_and_makes_exactly_max_trials_across_an_api_restart(
    deployment: ServerDeployment,
) -> None:
    body = {
        "name": "xor-restart",
        "spec": xor_mlp(epochs=300),
        "parameters": {
            "optimizer.learning_rate": {"distribution": "log_uniform", "min": 0.001, "max": 0.1}
        },
        "metric": {"name": "loss", "goal": "minimize"},
        "max_trials": MAX_TRIALS,
        "max_concurrent": MAX_CONCURRENT,
        "seed": 1,
    }
    created = deployment.client.http.post("/v1/sweeps", json=body)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]

    # Watch the database the whole time: never more active trials, nor more trials, than
    # the sweep allows.
    seen: list[list[tuple[int, str]]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(deployment.store.trials(sweep_id))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_until(
            lambda: sum(s not in ACTIVE for _, s in deployment.store.trials(sweep_id)) >= 2,
            SWEEP_SECONDS,
            what="two trials ended",
        )
        deployment.restart_api()
        wait_until(
            lambda: (
                deployment.client.http.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "succeeded"
            ),
            SWEEP_SECONDS,
            what="the sweep to succeed",
            watch=[deployment.api, deployment.worker],
        )
    finally:
        done.set()
        watcher.join()

    trials = deployment.store.trials(sweep_id)
    assert [number for number, _ in trials] == list(range(MAX_TRIALS))
    assert all(status == "succeeded" for _, status in trials)
    for snapshot in seen:
        assert len(snapshot) <= MAX_TRIALS
        assert sum(status in ACTIVE for _, status in snapshot) <= MAX_CONCURRENT, snapshot
    sweep = deployment.client.http.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["trials"]["total"] == MAX_TRIALS and sweep["best"] is not None
