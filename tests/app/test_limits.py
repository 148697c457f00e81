"""Requests too big or too odd to run: each a quick 4xx with its `loc`, and nothing queued."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.specs import IRIS_MLP

Headers = dict[str, str]
ANSWER_SECONDS = 5.0  # generous for two busy cores; each is refused in well under a second


def _spec(change: Any) -> dict[str, Any]:
    spec = copy.deepcopy(IRIS_MLP)
    change(spec)
    return spec


def _units(n: int) -> Any:
    return lambda spec: spec["model"]["layers"][0].update(units=n)


def _layers(n: int) -> Any:
    layer = {"type": "dense", "units": 4, "activation": "relu"}
    return lambda spec: spec["model"].update(layers=[layer] * n + [{"type": "dense", "units": 3}])


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        (_units(10**9), ["body", "model"], "8,000,000,003 parameters (32.0 GB as float32"),
        (_layers(10_000), ["body", "model", "layers"], "at most 1000 items"),
        (
            lambda spec: spec.update(name="bad\x00name"),
            ["body", "name"],
            "cannot hold control characters",
        ),
        (
            lambda spec: spec.setdefault("training", {}).update(epochs=10**9),
            ["body", "training", "epochs"],
            "less than or equal to 100000",
        ),
        (
            lambda spec: spec.setdefault("training", {}).update(batch_size=0),
            ["body", "training", "batch_size"],
            "greater than 0",
        ),
    ],
)
def test_a_job_too_big_or_odd_is_refused_quickly_with_its_loc(
    client: TestClient, alice: Headers, change: Any, loc: list[Any], message: str
) -> None:
    started = time.monotonic()
    answer = client.post("/v1/jobs", json=_spec(change), headers=alice)
    assert time.monotonic() - started < ANSWER_SECONDS
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert any(item["loc"] == loc and message in item["msg"] for item in detail), detail
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []


def test_the_servers_own_limits_apply(
    client: TestClient, alice: Headers, settings: Settings
) -> None:
    settings.max_parameters = 1_000
    settings.max_epochs = 50
    answer = client.post("/v1/jobs", json=IRIS_MLP, headers=alice)  # 4-8-3: 67 parameters
    assert answer.status_code == 201, answer.text
    wide = client.post("/v1/jobs", json=_spec(_units(1_000)), headers=alice)
    assert wide.status_code == 422
    (problem,) = wide.json()["detail"]
    assert problem["loc"] == ["body", "model"]
    assert "8,003 parameters" in problem["msg"] and "BACKPROP_MAX_PARAMETERS" in problem["msg"]
    long = client.post(
        "/v1/jobs",
        json=_spec(lambda s: s.setdefault("training", {}).update(epochs=51)),
        headers=alice,
    )
    assert long.status_code == 422
    assert "over this server's limit of 50 (BACKPROP_MAX_EPOCHS)" in long.text


def test_a_sweep_over_the_limits_is_refused_at_its_parameter(
    client: TestClient, alice: Headers
) -> None:
    body = {
        "spec": IRIS_MLP,
        "parameters": {"model.layers[0].units": {"values": [8, 10**9]}},
        "metric": {"name": "loss"},
        "max_trials": 2,
    }
    answer = client.post("/v1/sweeps", json=body, headers=alice)
    assert answer.status_code == 422
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["body", "parameters", "model.layers[0].units"]
    assert "the value 1000000000 makes an invalid spec: model: the model has" in problem["msg"]
