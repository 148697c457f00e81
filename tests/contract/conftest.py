"""Contract fuzzing: one real `backprop serve` per test module, fuzzed by schemathesis over
its live OpenAPI schema (`/openapi.json`), once with a valid key and once with none.

The budget: `BACKPROP_FUZZ_EXAMPLES` examples per operation and phase (a small default for
CI; `make fuzz` runs 200), generated deterministically (Hypothesis' derandomize), so a
failure in CI is the same failure on a developer's machine.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.specs.openapi.schemas import OpenApiSchema

from app.pagination import encode_cursor
from tests.integration.client import BackpropClient
from tests.integration.deployments import FAST_LEASES, START_SECONDS
from tests.integration.processes import (
    PROCESSES,
    Processes,
    backprop_command,
    clean_environment,
    pytest_runtest_makereport,
)
from tests.servers import free_port, wait_until
from tests.specs import xor_mlp

__all__ = ["pytest_runtest_makereport"]  # the processes' logs on a failed test

API_KEY = "bp_contract_test_key"
EXAMPLES = int(os.environ.get("BACKPROP_FUZZ_EXAMPLES", "5"))
# The coverage phase walks every keyword of a body's schema, whatever the example budget:
# over the JobSpec (jobs, and sweeps' `spec`) that is ~5,000 requests per operation, too
# many for CI. There it is off for those two; `make fuzz` (BACKPROP_FUZZ_FULL=1) runs it.
FULL = os.environ.get("BACKPROP_FUZZ_FULL") == "1"
SPEC_BODIED = [("POST", "/v1/jobs"), ("POST", "/v1/sweeps")]
# Calls per chain in the stateful phase (the number of chains is the example budget).
STATEFUL_STEPS = int(os.environ.get("BACKPROP_FUZZ_STATEFUL_STEPS", "6"))
# Few active jobs: the examples in the schema (API.md's digits CNN and sweep) are real
# submissions, and the one embedded worker must not train them for the rest of the run.
MAX_ACTIVE_JOBS = 3
XOR_CSV = "x1,x2,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n"
MODEL_OPERATIONS = [
    ("GET", "/v1/jobs/{job_id}/model"),
    ("POST", "/v1/jobs/{job_id}/predict"),
    ("GET", "/v1/jobs/{job_id}/metrics"),
]

# Statuses a schema-valid request may still get, per operation, because what decides them
# is not in the request's shape, so JSON Schema cannot say it (each is documented on its
# route): whether a dataset named in a spec exists and fits the model's shapes; whether
# an uploaded file parses; whether predict's inputs fit the trained model.
SEMANTIC_REJECTIONS: dict[tuple[str, str], list[str]] = {
    ("POST", "/v1/datasets"): ["413", "415", "422"],
    ("POST", "/v1/jobs"): ["422"],
    ("POST", "/v1/sweeps"): ["422"],
    ("POST", "/v1/jobs/{job_id}/predict"): ["422"],
}
# schemathesis' own default for positive_data_acceptance.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]

# A page cursor is an opaque token (`format: page-cursor`); a valid one is what the API
# hands out: a position (created_at, id) encoded.
schemathesis.openapi.format(
    "page-cursor",
    st.builds(encode_cursor, st.datetimes(timezones=st.just(UTC)), st.uuids().map(str)),
)


@dataclass(frozen=True)
class LiveService:
    """A running `backprop serve` and the resources made before fuzzing."""

    base_url: str
    client: BackpropClient
    processes: Processes
    dataset_id: str
    job_id: str


def _fuzz_config(api_key: str | None, job_id: str) -> schemathesis.Config:
    operations: list[dict[str, Any]] = [
        {
            "include-method": method,
            "include-path": path,
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, *statuses]}},
        }
        for (method, path), statuses in SEMANTIC_REJECTIONS.items()
    ]
    # The operations that need a trained model get the finished job (links give the
    # others fresh, queued ones, which have no model yet).
    operations += [
        {"include-method": method, "include-path": path, "parameters": {"path.job_id": job_id}}
        for method, path in MODEL_OPERATIONS
    ]
    # `ensure_resource_availability` is off for the two model operations only: API.md has
    # them answer 404 until the job has a model, so a job just created (which schemathesis
    # links there by itself, from the `{job_id}`) is rightly "not found" there.
    operations += [
        {
            "include-method": method,
            "include-path": path,
            "checks": {"ensure_resource_availability": {"enabled": False}},
        }
        for method, path in MODEL_OPERATIONS
        if path.endswith(("/model", "/predict"))
    ]
    if not FULL:
        operations += [
            {
                "include-method": method,
                "include-path": path,
                "phases": {"coverage": {"enabled": False}},
            }
            for method, path in SPEC_BODIED
        ]
    # The key as the schema's `HTTPBearer` scheme, so that schemathesis knows it is real and
    # its `ignored_auth` check probes the route without it and with a wrong one.
    auth = {"auth": {"openapi": {"HTTPBearer": {"bearer": api_key}}}} if api_key else {}
    return schemathesis.Config.from_dict(
        {
            **auth,
            "generation": {
                "max-examples": EXAMPLES,
                "deterministic": True,  # Hypothesis' derandomize: the same cases every run
                "database": "none",
                # Without a key, made-up `Authorization` values are wrong keys to refuse.
                "with-security-parameters": api_key is None,
            },
            "phases": {"stateful": {"max-steps": STATEFUL_STEPS}},
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "request-timeout": 30,
            # An event stream ends only with its job; its first event (the status) is enough.
            "max-stream-events": 1,
            "operations": operations,
        }
    )


def _start(processes: Processes, tmp_path: Path) -> LiveService:
    port = free_port()
    env = clean_environment(
        BACKPROP_BOOTSTRAP_API_KEY=API_KEY,
        BACKPROP_MAX_ACTIVE_JOBS=str(MAX_ACTIVE_JOBS),
        BACKPROP_WORKER_NAME="contract",
        **FAST_LEASES,
    )
    server = processes.start(
        "serve",
        backprop_command("serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)),
        env=env,
        cwd=tmp_path,
    )
    base_url = f"http://127.0.0.1:{port}"
    client = BackpropClient(base_url, API_KEY)
    wait_until(client.ready, START_SECONDS, what="/readyz", watch=[server])
    # Real ids for the operations on one resource, besides those the links supply: a
    # dataset and a finished job with a model (predict, model download, metrics).
    files = {"file": ("xor.csv", io.BytesIO(XOR_CSV.encode()))}
    upload = client.http.post("/v1/datasets", files=files)
    assert upload.status_code == 201, upload.text
    job = client.submit({"name": "contract-xor", **xor_mlp()})
    client.wait_for_job(job["id"], "succeeded", timeout=120)
    return LiveService(base_url, client, processes, upload.json()["id"], job["id"])


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    tmp_path = tmp_path_factory.mktemp("contract")
    (tmp_path / "logs").mkdir()
    processes = Processes(tmp_path / "logs")
    try:
        service = _start(processes, tmp_path)
        try:
            yield service
        finally:
            service.client.close()
    finally:
        processes.stop_all()


@pytest.fixture(autouse=True)
def _attach_logs(request: pytest.FixtureRequest, live_service: LiveService) -> None:
    """The server's log on a failed test's report (see tests/integration/processes.py)."""
    request.node.stash[PROCESSES] = live_service.processes
    # schemathesis 4.32's `from_fixture` renames the test's node through `Node._nodeid`,
    # which pytest 9.2 no longer has (it keeps a structured `_id`): give it one to rename.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def api_schema(live_service: LiveService) -> OpenApiSchema:
    """The live schema, with a valid key on every request."""
    return schemathesis.openapi.from_url(
        f"{live_service.base_url}/openapi.json",
        config=_fuzz_config(API_KEY, live_service.job_id),
    )


@pytest.fixture(scope="module")
def anonymous_schema(live_service: LiveService) -> OpenApiSchema:
    """The live schema, requests sent without a key."""
    return schemathesis.openapi.from_url(
        f"{live_service.base_url}/openapi.json", config=_fuzz_config(None, live_service.job_id)
    )
