"""`backprop serve` as a user runs it in a terminal: Ctrl-C stops the API and the worker
within seconds, handing the running job back to the queue, and a restart finishes it."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.integration.deployments import EmbeddedDeployment
from tests.integration.processes import Processes
from tests.servers import wait_until
from tests.specs import LONG_DIGITS_MLP

JOB_SECONDS = 180
STOP_SECONDS = 15  # the idle filesystem-broker worker alone takes ~7 s to stop


def test_ctrl_c_stops_serve_and_a_running_job_finishes_after_a_restart(
    processes: Processes, tmp_path: Path
) -> None:
    deployment = EmbeddedDeployment(processes, tmp_path)
    try:
        job_id = deployment.client.submit(LONG_DIGITS_MLP)["id"]
        deployment.client.wait_for_progress(job_id, epoch=2, timeout=JOB_SECONDS)

        serve = deployment.server
        serve.signal_group(signal.SIGINT)  # what Ctrl-C does to the terminal's foreground group
        assert serve.popen.wait(STOP_SECONDS) == 0, serve.log_tail()
        wait_until(lambda: not serve.group_members(), 10, what="serve's processes to exit")
        # The client commands find a running server through this file; a stopped one is gone.
        assert not (deployment.data_dir / "server.json").exists()
        stopped = deployment.store.job(job_id)
        # Handed back, not failed: same attempt, to resume from its last checkpoint.
        assert (stopped["status"], stopped["attempt"]) == ("queued", 1), stopped

        deployment.start_worker()  # `backprop serve` again, same data directory
        job = deployment.client.wait_for_job(job_id, "succeeded", JOB_SECONDS)
        assert job["attempt"] == 1
        assert job["summary"]["epochs_completed"] == LONG_DIGITS_MLP["training"]["epochs"]
    finally:
        deployment.close()
