"""`backprop api --workers N`: several API processes behind one port still count every
request in `/metrics`, whichever process answers the scrape."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.processes import Processes, backprop_command, clean_environment
from tests.servers import free_port, wait_until

REQUESTS = 40


def healthz_requests(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "backprop_http_requests_total" and sample.labels["route"] == "/healthz"
    )


def test_two_api_processes_count_all_requests_in_every_scrape(
    processes: Processes, tmp_path: Path
) -> None:
    env = clean_environment(BACKPROP_DATA_DIR=str(tmp_path / "data"))
    migrate = subprocess.run(backprop_command("migrate"), env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr
    port = free_port()
    api = processes.start(
        "api",
        backprop_command("api", "--port", str(port), "--workers", "2"),
        env=env,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, 120, what="/readyz of `backprop api --workers 2`", watch=[api])
    wait_until(
        lambda: api.log_tail().count("Application startup complete") >= 2,
        60,
        what="both API processes",
    )

    # A new connection each, so that both processes take some of them.
    for _ in range(REQUESTS):
        assert httpx.get(f"{url}/healthz", headers={"Connection": "close"}).status_code == 200
    counts = [
        healthz_requests(httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text)
        for _ in range(6)
    ]

    assert counts == [REQUESTS] * 6, api.log_tail()
