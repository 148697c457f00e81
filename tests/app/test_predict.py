"""`POST /v1/jobs/{id}/predict` with real trained models stored as their jobs' artifacts."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Job, Tenant
from app.services.predict.cache import PredictorCache
from app.services.predict.predictor import bucket_size, predicted_classes
from app.services.predict.service import is_classifier
from core.data import load_builtin
from core.export import import_model, write_model
from core.model import Model
from core.spec import JobSpec, parse_spec
from core.spec.examples import DIGITS_CNN
from core.train import TrainResult, train
from tests.specs import mlp

Headers = dict[str, str]

# API.md's digits CNN, smaller and for one epoch: a real trained model in a few seconds.
DIGITS_SPEC = copy.deepcopy(DIGITS_CNN)
DIGITS_SPEC.pop("validation")
DIGITS_SPEC["model"]["layers"][0]["filters"] = 8
DIGITS_SPEC["optimizer"] = {"type": "adam", "learning_rate": 0.01}
DIGITS_SPEC["training"] = {"epochs": 1, "batch_size": 64}

# The 1986 way: a sigmoid output trained with squared error; classes come from the dataset.
XOR_SIGMOID_SPEC = mlp(
    "builtin:xor",
    [8, 1],
    activation="tanh",
    output_activation="sigmoid",
    loss="mse",
    optimizer={"type": "adam", "learning_rate": 0.1},
    training={"epochs": 200, "batch_size": "full"},
)

SINE_SPEC = mlp(
    "builtin:sine", [16, 1], activation="tanh", loss="mse", training={"epochs": 5, "batch_size": 64}
)

XOR_POINTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


Trained = tuple[JobSpec, TrainResult]


def _train(body: dict[str, Any]) -> Trained:
    spec = parse_spec(body)
    return spec, train(spec, load_builtin(spec.dataset.removeprefix("builtin:")))


@pytest.fixture(scope="module")
def digits_model() -> Trained:
    return _train(DIGITS_SPEC)


@pytest.fixture(scope="module")
def xor_model() -> Trained:
    return _train(XOR_SIGMOID_SPEC)


@pytest.fixture(scope="module")
def sine_model() -> Trained:
    return _train(SINE_SPEC)


def insert_job(app: FastAPI, tenant: str, spec: JobSpec, **fields: Any) -> str:
    with transaction(app.state.sessionmaker) as session:
        tenant_id = session.scalars(select(Tenant.id).where(Tenant.name == tenant)).one()
        job = Job(
            tenant_id=tenant_id,
            name="job",
            dataset=spec.dataset,
            device="cpu",
            queue="cpu",
            spec=spec.model_dump(mode="json"),
            **fields,
        )
        session.add(job)
        session.flush()
        return job.id


def job_with_model(
    app: FastAPI, settings: Settings, tenant: str, trained: Trained, params: Any = None
) -> str:
    """A succeeded job whose model file the worker would have written (`params` overrides)."""
    spec, result = trained
    job_id = insert_job(app, tenant, spec, status="succeeded")
    relative = f"jobs/{job_id}/model.safetensors"
    input_shape = load_builtin(spec.dataset.removeprefix("builtin:")).info.input_shape
    write_model(
        settings.data_dir / relative,
        params if params is not None else result.params,
        result.model_state,
        spec,
        input_shape=input_shape,
    )
    with transaction(app.state.sessionmaker) as session:
        session.get_one(Job, job_id).model_path = relative
    return job_id


def predict(client: TestClient, headers: Headers, job_id: str, body: Any) -> Any:
    return client.post(f"/v1/jobs/{job_id}/predict", json=body, headers=headers)


def the_error(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return dict(error)


def test_outputs_equal_the_downloaded_models(
    client: TestClient, app: FastAPI, settings: Settings, alice: Headers, digits_model: Trained
) -> None:
    job_id = job_with_model(app, settings, "alice", digits_model)
    images = load_builtin("digits").x[:37]

    response = predict(client, alice, job_id, {"inputs": images.tolist()})

    assert response.status_code == 200, response.text
    body = response.json()
    downloaded = client.get(f"/v1/jobs/{job_id}/model", headers=alice)
    params, state, spec = import_model(downloaded.content)
    expected, _ = Model(spec.model).apply(params, state, images, train=False)
    outputs = np.array(body["outputs"], np.float32)
    assert outputs.shape == (37, 10)
    np.testing.assert_allclose(outputs, np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert body["classes"] == np.argmax(expected, axis=-1).tolist()


def test_a_second_request_does_not_recompile(
    client: TestClient, app: FastAPI, settings: Settings, alice: Headers, digits_model: Trained
) -> None:
    job_id = job_with_model(app, settings, "alice", digits_model)
    images = load_builtin("digits").x[:5].tolist()
    compile_events: list[str] = []

    def record(event: str, duration: float, **kwargs: Any) -> None:
        if event.startswith("/jax/core/compile/"):  # tracing, lowering and compiling alike
            compile_events.append(event)

    jax.monitoring.register_event_duration_secs_listener(record)
    try:
        assert predict(client, alice, job_id, {"inputs": images}).status_code == 200
        assert compile_events, "the first request should have traced the model"
        compile_events.clear()
        # The same request, and another size in the same batch bucket: nothing compiles.
        assert predict(client, alice, job_id, {"inputs": images}).status_code == 200
        assert predict(client, alice, job_id, {"inputs": images[:3]}).status_code == 200
    finally:
        jax.monitoring.unregister_event_duration_listener(record)
    assert compile_events == []
    assert len(app.state.predictions.cache) == 1


def test_a_sigmoid_classifier_thresholds_at_one_half(
    client: TestClient, app: FastAPI, settings: Settings, alice: Headers, xor_model: Trained
) -> None:
    job_id = job_with_model(app, settings, "alice", xor_model)

    body = predict(client, alice, job_id, {"inputs": XOR_POINTS}).json()

    assert np.array(body["outputs"]).shape == (4, 1)
    assert body["classes"] == [0, 1, 1, 0]


def test_regression_answers_outputs_only(
    client: TestClient, app: FastAPI, settings: Settings, alice: Headers, sine_model: Trained
) -> None:
    job_id = job_with_model(app, settings, "alice", sine_model)

    body = predict(client, alice, job_id, {"inputs": [[0.0], [1.5]]}).json()

    assert set(body) == {"outputs"}
    assert np.array(body["outputs"]).shape == (2, 1)


def test_non_finite_outputs_are_null(
    client: TestClient, app: FastAPI, settings: Settings, alice: Headers, sine_model: Trained
) -> None:
    params = jax.tree.map(np.array, sine_model[1].params)
    params["dense_1"]["bias"][:] = np.nan
    job_id = job_with_model(app, settings, "alice", sine_model, params=params)

    assert predict(client, alice, job_id, {"inputs": [[0.0]]}).json() == {"outputs": [[None]]}


@pytest.mark.parametrize(
    ("inputs", "loc", "words"),
    [
        ([[0.0] * 64], ["body", "inputs", 0], ["shape [64]", "[8, 8, 1]"]),
        ([[[[0.0]]] * 8] * 8, ["body", "inputs", 0], ["shape [8, 1, 1]", "[8, 8, 1]"]),
        (
            [[[[0.0]] * 8] * 8, [[[0.0]] * 8] * 7],
            ["body", "inputs", 1],
            ["shape [7, 8, 1]", "[8, 8, 1]"],
        ),
        ([[[[0.0]] * 8] * 8, [[[0.0]] * 8] * 7 + [[[0.0]] * 3]], ["body", "inputs", 1], ["ragged"]),
        ([0.0, 1.0], ["body", "inputs", 0], ["shape []", "[8, 8, 1]"]),
    ],
)
def test_shape_errors_are_422_with_the_expected_shape(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    alice: Headers,
    digits_model: Trained,
    inputs: Any,
    loc: list[Any],
    words: list[str],
) -> None:
    job_id = job_with_model(app, settings, "alice", digits_model)

    error = the_error(predict(client, alice, job_id, {"inputs": inputs}))

    assert error["loc"] == loc
    assert all(word in error["msg"] for word in words), error["msg"]


@pytest.mark.parametrize(
    ("raw_body", "loc", "type_"),
    [
        ('{"inputs": [[0, 1], [0, "1"]]}', ["body", "inputs", 1], "float_type"),
        ('{"inputs": [[0, null]]}', ["body", "inputs", 0], "float_type"),
        ('{"inputs": [[true, false]]}', ["body", "inputs", 0], "float_type"),
        ('{"inputs": [[0, 0], [0, {}]]}', ["body", "inputs", 1], "float_type"),
        ('{"inputs": [[0, [1]]]}', ["body", "inputs", 0], "shape_mismatch"),
        ('{"inputs": [[1, 1e400]]}', ["body", "inputs", 0], "finite_number"),
        ('{"inputs": [[0, 0], [NaN, 0]]}', ["body", "inputs", 1], "finite_number"),
        ('{"inputs": [[0, 0], [1e39, 0]]}', ["body", "inputs", 1], "finite_number"),
        ('{"inputs": []}', ["body", "inputs"], "too_short"),
        ('{"inputs": [[0, 0]], "input": 1}', ["body", "input"], "extra_forbidden"),
        ('{"inputs": {"x": [0, 0]}}', ["body", "inputs"], "list_type"),
        ("[[0, 0]]", ["body"], "model_type"),
        ('{"inputs": [[0, 0]', ["body"], "json_invalid"),
        ("", ["body"], "json_invalid"),
    ],
)
def test_bad_values_are_422_at_the_example(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    alice: Headers,
    xor_model: Trained,
    raw_body: str,
    loc: list[Any],
    type_: str,
) -> None:
    job_id = job_with_model(app, settings, "alice", xor_model)
    headers = {**alice, "Content-Type": "application/json"}

    response = client.post(f"/v1/jobs/{job_id}/predict", content=raw_body, headers=headers)

    error = the_error(response)
    assert (error["loc"], error["type"]) == (loc, type_), error


def test_at_most_10000_examples(
    client: TestClient, app: FastAPI, settings: Settings, alice: Headers, xor_model: Trained
) -> None:
    job_id = job_with_model(app, settings, "alice", xor_model)

    too_many = predict(client, alice, job_id, {"inputs": [[0.0, 1.0]] * 10_001})
    most = predict(client, alice, job_id, {"inputs": [[0.0, 1.0]] * 10_000})

    assert (the_error(too_many)["loc"], the_error(too_many)["type"]) == (
        ["body", "inputs"],
        "too_long",
    )
    assert most.status_code == 200
    assert most.json()["classes"] == [1] * 10_000


def test_a_body_too_large_for_any_valid_request_is_413_while_it_streams(
    client: TestClient, app: FastAPI, settings: Settings, alice: Headers, xor_model: Trained
) -> None:
    job_id = job_with_model(app, settings, "alice", xor_model)
    url = f"/v1/jobs/{job_id}/predict"
    # xor: 2 numbers per example; 10,000 examples fit in well under a mebibyte of JSON.
    padding = b" " * (2 << 20)

    declared = client.post(url, content=b'{"inputs": [[0, 1]]}' + padding, headers=alice)

    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting can stop it
        yield b'{"inputs": [[0, 1]]'
        for _ in range(64):
            yield padding[: 64 << 10]
        yield b"}"

    streamed = client.post(url, content=chunks(), headers=alice)

    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert "fewer examples" in response.json()["detail"]


def test_404_for_another_tenants_job_a_missing_one_and_one_without_a_model(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    alice: Headers,
    bob: Headers,
    xor_model: Trained,
) -> None:
    alices = job_with_model(app, settings, "alice", xor_model)
    running = insert_job(app, "alice", xor_model[0], status="running")
    body = {"inputs": XOR_POINTS}

    assert predict(client, bob, alices, body).status_code == 404
    assert predict(client, alice, "no-such-job", body).status_code == 404
    without_model = predict(client, alice, running, body)
    assert without_model.status_code == 404
    assert "has no model" in without_model.json()["detail"]
    assert predict(client, {}, alices, body).status_code == 401


def test_predict_is_in_the_openapi_document(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/predict"]["post"]
    assert {"200", "401", "404", "422"} <= set(operation["responses"])


@pytest.mark.parametrize(
    ("outputs", "loss", "classes"),
    [
        ([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]], "cross_entropy", [1, 0]),
        ([[-0.2], [0.3]], "binary_cross_entropy", [0, 1]),  # logits: threshold 0
        ([[0.4], [0.6]], "mse", [0, 1]),  # a sigmoid: threshold 0.5
        ([[-1.0, 2.0], [1.0, -2.0]], "binary_cross_entropy", [[0, 1], [1, 0]]),  # multi-label
        ([[[0.0, 1.0], [1.0, 0.0]]], "cross_entropy", [[1, 0]]),  # a class per position
    ],
)
def test_classes_follow_the_accuracy_metrics_rule(
    outputs: list[Any], loss: str, classes: list[Any]
) -> None:
    assert predicted_classes(np.array(outputs, np.float32), loss).tolist() == classes


def test_classifier_by_loss_then_dataset_then_metrics() -> None:
    xor, sine = load_builtin("xor").info, load_builtin("sine").info
    mse = {"loss": {"type": "mse"}, "metrics": []}
    assert is_classifier({"loss": {"type": "cross_entropy"}}, None)
    assert is_classifier(mse, xor)
    assert not is_classifier(mse, sine)
    assert not is_classifier(mse, None)  # a deleted dataset, no classification metric
    assert is_classifier({**mse, "metrics": [{"type": "accuracy"}]}, None)


def test_bucket_sizes_are_few() -> None:
    sizes = {bucket_size(n) for n in range(1, 1025)}
    assert sizes == {8, 16, 32, 64, 128, 256, 512, 1024}


def test_cache_keeps_the_most_recently_used() -> None:
    cache = PredictorCache(capacity=2)
    loads: list[str] = []

    def loader(name: str) -> Any:
        return lambda: loads.append(name) or name

    for key in ("a", "b", "a", "c", "a", "b"):
        cache.get_or_load(key, loader(key))

    assert loads == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came
    assert len(cache) == 2 and "a" in cache and "b" in cache
