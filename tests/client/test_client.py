"""`backprop_client.Client` against a live `backprop serve`, as a user's script uses it."""

from __future__ import annotations

import copy
import importlib.util
import uuid
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from backprop_client import BackpropError, Client, Event, resolve_connection
from tests.client.files import XOR_CLASSES, XOR_INPUTS, write_xor_csv
from tests.integration.deployments import EmbeddedDeployment
from tests.specs import CSV_SPEC_YAML, LONG_DIGITS_MLP, XOR

JOB_SECONDS = 120  # a small job on two cores that the rest of the suite shares


@pytest.fixture(scope="module")
def xor_run(shared_serve: EmbeddedDeployment) -> tuple[str, list[Event]]:
    """builtin:xor submitted as a dict and waited for; its id and the events seen, in order."""
    key = (shared_serve.data_dir / "api_key").read_text().strip()
    with Client(str(shared_serve.client.http.base_url), key) as client:
        job = client.submit({**XOR, "name": f"xor-{uuid.uuid4().hex[:6]}"})
        assert job.status == "queued"
        events: list[Event] = []
        finished = client.wait(job, callback=events.append, timeout=JOB_SECONDS)
    assert finished.status == "succeeded", finished.error
    return finished.id, events


def test_the_client_finds_serve_through_its_data_directory(
    served: EmbeddedDeployment, data_dir: Path
) -> None:
    connection = resolve_connection(data_dir=data_dir, environ={})
    assert connection.url == str(served.client.http.base_url).rstrip("/")
    assert (connection.url_source, connection.key_source) == (
        str(data_dir / "server.json"),
        str(data_dir / "api_key"),
    )
    with Client(data_dir=data_dir) as client:
        assert {dataset.id for dataset in client.datasets(builtin=True)} >= {"builtin:xor"}


def test_wait_calls_back_with_the_events_in_order(
    client: Client, xor_run: tuple[str, list[Event]]
) -> None:
    job_id, events = xor_run
    kinds = [event.event for event in events]
    assert kinds[0] == "status" and events[0].data["status"] in ("queued", "running")
    assert events[-1].is_terminal and events[-1].data["status"] == "succeeded"
    assert sum(event.is_terminal for event in events) == 1
    statuses = [event.data["status"] for event in events if event.event == "status"]
    assert statuses[-2:] == ["running", "succeeded"] or statuses == ["succeeded"], statuses
    fractions = [e.data["progress"]["fraction"] for e in events if e.event == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    # The metrics events, put together, are the job's metrics: nothing lost or repeated.
    streamed: dict[str, list[int]] = {}
    for event in events:
        if event.event == "metrics":
            for series in event.data["series"]:
                streamed.setdefault(series["name"], []).extend(series["step"])
    stored = client.metrics(job_id)
    assert streamed == {name: series.step for name, series in stored.series.items()}


def test_metrics_come_as_columns(client: Client, xor_run: tuple[str, list[Event]]) -> None:
    job_id, _ = xor_run
    metrics = client.metrics(job_id)
    assert {"loss", "accuracy", "epoch_loss"} <= set(metrics.names)
    columns = metrics.columns(["loss", "accuracy"])
    assert list(columns) == ["step", "epoch", "loss", "accuracy"]
    assert columns["step"] == sorted(set(metrics["loss"].step) | set(metrics["accuracy"].step))
    rows = dict(zip(columns["step"], columns["loss"], strict=True))
    assert [rows[step] for step in metrics["loss"].step] == metrics["loss"].value
    assert columns["epoch"][-1] == 99 and columns["accuracy"][-1] == 1.0
    assert client.metrics(job_id, names=["accuracy"]).names == ["accuracy"]

    if importlib.util.find_spec("pandas") is None:
        with pytest.raises(ImportError, match="pip install pandas"):
            metrics.to_pandas()
    else:
        frame = metrics.to_pandas(["loss", "accuracy"])
        assert list(frame.columns) == ["epoch", "loss", "accuracy"]
        assert frame.index.name == "step" and len(frame) == len(columns["step"])


def test_download_and_predict(
    client: Client, xor_run: tuple[str, list[Event]], tmp_path: Path
) -> None:
    job_id, _ = xor_run
    job = client.job(job_id)
    path = client.download(job, tmp_path)
    assert path == tmp_path / f"{job.name}.safetensors"
    tensors = load_file(path)
    assert tensors["dense_0.kernel"].shape == (2, 8)
    assert tensors["dense_1.bias"].shape == (2,)
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind

    prediction = client.predict(job, XOR_INPUTS)
    assert prediction.classes == XOR_CLASSES
    assert len(prediction.outputs) == 4 and len(prediction.outputs[0]) == 2


def test_upload_a_csv_and_train_on_it_from_a_yaml_spec(client: Client, tmp_path: Path) -> None:
    dataset = client.upload_dataset(write_xor_csv(tmp_path / "xor.csv"), target="label")
    assert (dataset.name, dataset.num_examples, dataset.input_shape) == ("xor", 40, [2])
    assert sorted(dataset.class_names or []) == ["different", "same"]
    assert dataset.id in {listed.id for listed in client.datasets()}

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(CSV_SPEC_YAML)
    job = client.submit(spec_file, dataset=dataset, name=f"csv-{uuid.uuid4().hex[:6]}")
    assert job.dataset == dataset.id and job.spec["training"]["epochs"] == 60
    finished = client.wait(job.id, timeout=JOB_SECONDS)
    assert finished.status == "succeeded", finished.error
    assert finished.summary is not None and finished.summary["accuracy"] == 1.0
    assert [listed.id for listed in client.jobs(name=job.name)] == [job.id]


def test_cancel_a_running_job(client: Client) -> None:
    job = client.submit(LONG_DIGITS_MLP)
    cancelled = False
    for event in client.stream(job, timeout=JOB_SECONDS):
        if event.event == "status" and event.data["status"] == "running" and not cancelled:
            cancelled = True  # (while its training process starts: stopped all the same)
            assert client.cancel(job).status in ("running", "cancelled")
        if event.is_terminal:
            assert event.data["status"] == "cancelled", event.data
    finished = client.job(job)
    assert finished.status == "cancelled"
    assert cancelled and finished.finished_at is not None
    with pytest.raises(BackpropError) as already:
        client.cancel(job)
    assert already.value.status == 409


def test_errors_carry_the_status_and_the_servers_detail(client: Client, data_dir: Path) -> None:
    with pytest.raises(BackpropError) as missing:
        client.job(str(uuid.uuid4()))
    assert missing.value.status == 404 and "no job with id" in str(missing.value.detail)

    bad = copy.deepcopy(XOR)
    bad["model"]["layers"][1]["units"] = -2
    with pytest.raises(BackpropError) as invalid:
        client.submit(bad)
    assert invalid.value.status == 422
    assert invalid.value.detail[0]["loc"][:4] == ["body", "model", "layers", 1]
    assert "body.model.layers.1" in str(invalid.value)

    with Client(client.url, "bp_not_a_key") as stranger, pytest.raises(BackpropError) as denied:
        stranger.jobs()
    assert denied.value.status == 401 and "BACKPROP_API_KEY" in str(denied.value)
