"""docker-compose.yml, read as Docker Compose reads it: valid against the Compose
Specification's schema, required secrets fail loudly, and the properties the deployment
relies on (persistence, start order, scaling, GPU reservations, the stop grace period)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.cli import WORKER_STOP_SECONDS
from tests.deploy.compose import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    MissingVariable,
    backprop_services,
    container_port,
    load_compose,
    parse_compose,
    read_env_file,
)

SCHEMA = Path(__file__).with_name("compose-spec.schema.json")
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "pgtestpassword",
    "REDIS_PASSWORD": "redistestpassword",
    "BACKPROP_BOOTSTRAP_API_KEY": "bp_compose_file_test",
}


def schema_errors(document: dict[str, Any]) -> list[str]:
    # The schema names draft-07 in a form jsonschema does not look up: say it explicitly.
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(read_env_file(ENV_EXAMPLE) | TEST_SECRETS)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    assert schema_errors(parse_compose()) == []
    assert schema_errors(compose) == []


def test_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["comand"] = broken["services"]["api"].pop("command")
    broken["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_finished"
    errors = schema_errors(broken)
    assert any(e.startswith("services.api:") and "comand" in e for e in errors), errors
    assert any(e.startswith("services.worker.depends_on") for e in errors), errors


def test_required_settings_fail_loudly_and_env_example_lists_them() -> None:
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", text))
    example = read_env_file(ENV_EXAMPLE)
    # Every required value is in .env.example, and left empty there: no shipped secret.
    assert required == {name for name, value in example.items() if value == ""}
    assert required >= set(TEST_SECRETS)
    for name in sorted(required):
        with pytest.raises(MissingVariable, match=rf"{name}.*set {name} in \.env"):
            load_compose({**example, **TEST_SECRETS, name: ""})


def test_databases_persist_and_start_before_backprop(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], compose["volumes"]
    for name, data_dir in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        assert f"{name}:{data_dir}" in services[name]["volumes"] and name in volumes
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    for name, spec in backprop_services(compose).items():
        conditions = {dep: v["condition"] for dep, v in spec["depends_on"].items()}
        expected = {"postgres": "service_healthy"}
        if name != "migrate":
            expected |= {"redis": "service_healthy", "migrate": "service_completed_successfully"}
        assert conditions == expected, name
    assert services["migrate"]["restart"] == "no"


def test_backprop_services_share_one_data_volume(compose: dict[str, Any]) -> None:
    for name, spec in backprop_services(compose).items():
        data_dir = spec["environment"]["BACKPROP_DATA_DIR"]
        assert f"data:{data_dir}" in spec["volumes"], name
    assert "data" in compose["volumes"]


def test_workers_scale_and_outlast_their_soft_shutdown(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("worker", "worker-gpu"):
        worker = services[name]
        # `--scale worker=N` needs containers without a fixed name or host port.
        assert "container_name" not in worker and "ports" not in worker, name
        # Docker's SIGKILL must come after the worker has handed its jobs back.
        assert seconds(worker["stop_grace_period"]) > WORKER_STOP_SECONDS, name
        assert worker["init"] is True, name


def test_gpu_worker_and_flower_are_opt_in_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "gpu"
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["flower"]["profiles"] == ["monitoring"]
    assert [container_port(p) for p in services["flower"]["ports"]] == [5555]
    assert services["flower"]["ports"][0].startswith("127.0.0.1:")
    # Everything else starts with a plain `docker compose up`.
    assert {n for n, s in services.items() if "profiles" not in s} == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
    }


def test_the_minio_profile_is_an_object_store_the_services_can_be_pointed_at(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["minio"]["profiles"] == services["minio-bucket"]["profiles"] == ["minio"]
    assert services["minio-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "minio" in compose["volumes"]
    for name in backprop_services(compose):
        environment = services[name]["environment"]
        for setting in ("BACKPROP_STORAGE_URL", "BACKPROP_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
            assert setting in environment, (name, setting)
    # Left unset, the services keep the data volume (an empty URL means the data directory).
    assert services["api"]["environment"]["BACKPROP_STORAGE_URL"] == ""
