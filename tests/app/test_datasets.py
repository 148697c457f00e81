"""Datasets API: upload (streamed, cut off when too large), list, get, delete, built-ins."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.domain import dataset_store
from app.domain.db.engine import reading, transaction
from app.domain.db.models import Dataset, Job, Tenant
from tests.app.files import (
    IRIS_CSV,
    MULTIPART,
    RAGGED_CSV,
    image_zip_bytes,
    leftovers,
    multipart_head,
    npz_bytes,
    streamed_upload,
)

MiB = 1024 * 1024


def upload(
    client: TestClient,
    headers: dict[str, str],
    filename: str,
    content: bytes,
    **fields: str,
) -> Any:
    return client.post(
        "/v1/datasets", headers=headers, files={"file": (filename, content)}, data=fields
    )


def created(client: TestClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    response = upload(client, headers, f"{name}.csv", IRIS_CSV)
    assert response.status_code == 201, response.text
    return response.json()


def tenant_id(app: FastAPI, name: str) -> str:
    with transaction(app.state.sessionmaker) as session:
        return session.scalars(select(Tenant.id).where(Tenant.name == name)).one()


def add_job(app: FastAPI, tenant: str, dataset_id: str, *, status: str, validation: bool) -> str:
    job = Job(
        tenant_id=tenant,
        name="uses-it",
        status=status,
        dataset="builtin:iris" if validation else dataset_id,
        dataset_id=None if validation else dataset_id,
        validation_dataset_id=dataset_id if validation else None,
        device="cpu",
        queue="cpu",
        spec={},
    )
    with transaction(app.state.sessionmaker) as session:
        session.add(job)
    return job.id


# --- upload ---------------------------------------------------------------------------


def test_csv_upload_returns_the_dataset(client: TestClient, alice: dict[str, str]) -> None:
    response = upload(client, alice, "iris_small.csv", IRIS_CSV)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "format",
        "task",
        "num_examples",
        "input_shape",
        "target_shape",
        "num_classes",
        "class_names",
        "size_bytes",
        "sha256",
        "created_at",
    }
    uuid.UUID(body["id"])
    assert body["name"] == "iris_small"  # the file name without its extension
    assert (body["format"], body["task"]) == ("csv", "classification")
    assert (body["num_examples"], body["input_shape"], body["target_shape"]) == (4, [2], [])
    assert (body["num_classes"], body["class_names"]) == (2, ["setosa", "versicolor"])
    assert body["size_bytes"] == len(IRIS_CSV)
    assert body["sha256"] == hashlib.sha256(IRIS_CSV).hexdigest()
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
    assert client.get(f"/v1/datasets/{body['id']}", headers=alice).json() == body


def test_upload_is_converted_once_and_opened_memory_mapped(
    client: TestClient, app: FastAPI, settings: Settings, alice: dict[str, str]
) -> None:
    body = created(client, alice, "iris")
    assert (settings.datasets_dir / body["id"] / "x.npy").is_file()
    assert not list((settings.data_dir / ".uploads").iterdir())  # the upload itself is gone
    alice_id = tenant_id(app, "alice")
    with app.state.sessionmaker() as session, reading(session):
        dataset = dataset_store.open_dataset(session, settings, alice_id, body["id"])
        row = session.get(Dataset, body["id"])
    assert isinstance(dataset.x, np.memmap)
    assert dataset.x.shape == (4, 2) and dataset.y.tolist() == [0, 1, 0, 1]
    assert row is not None and row.storage_path == f"datasets/{body['id']}"


def test_npz_upload_with_form_fields(client: TestClient, alice: dict[str, str]) -> None:
    x = np.arange(24, dtype=np.float64).reshape(6, 2, 2)
    content = npz_bytes(x=x, y=np.linspace(0.0, 1.0, 6))
    response = upload(client, alice, "waves.npz", content, name="my waves", task="regression")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["format"], body["task"]) == ("my waves", "npz", "regression")
    assert (body["input_shape"], body["target_shape"]) == ([2, 2], [1])
    assert (body["num_classes"], body["class_names"]) == (None, None)


@pytest.mark.parametrize(("image_size", "shape"), [(None, [3, 4, 1]), ("2x5", [2, 5, 1])])
def test_image_zip_upload(
    client: TestClient, alice: dict[str, str], image_size: str | None, shape: list[int]
) -> None:
    fields = {"image_size": image_size} if image_size else {}
    response = upload(client, alice, "pets.zip", image_zip_bytes(), **fields)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["format"], body["num_examples"], body["input_shape"]) == ("image_zip", 3, shape)
    assert body["class_names"] == ["cat", "dog"]


def test_format_field_overrides_the_file_name(client: TestClient, alice: dict[str, str]) -> None:
    content = b"a,b,c\n1,2.5,3\n4,5,6\n"
    response = upload(client, alice, "export.txt", content, format="CSV", target="b")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["format"]) == ("export", "csv")
    assert (body["task"], body["input_shape"]) == ("regression", [2])  # a float target


# --- errors that leave nothing behind ----------------------------------------------------


def assert_nothing_left(app: FastAPI, settings: Settings) -> None:
    assert leftovers(settings.data_dir) == []
    with app.state.sessionmaker() as session, reading(session):
        assert session.scalars(select(Dataset)).all() == []


def test_unknown_extension_is_415(
    client: TestClient, app: FastAPI, settings: Settings, alice: dict[str, str]
) -> None:
    response = upload(client, alice, "data.xlsx", b"PK\x03\x04")
    assert response.status_code == 415
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "format"] and "data.xlsx" in error["msg"]
    assert_nothing_left(app, settings)


def test_unknown_format_field_is_415(client: TestClient, alice: dict[str, str]) -> None:
    response = upload(client, alice, "data.csv", IRIS_CSV, format="parquet")
    assert response.status_code == 415
    assert response.json()["detail"][0]["loc"] == ["body", "format"]


def test_a_body_that_is_not_multipart_is_415(client: TestClient, alice: dict[str, str]) -> None:
    response = client.post("/v1/datasets", headers=alice, json={"file": "a,b\n1,2\n"})
    assert response.status_code == 415
    assert response.json()["detail"][0]["loc"] == ["header", "content-type"]


def test_ragged_csv_is_422_naming_the_line(
    client: TestClient, app: FastAPI, settings: Settings, alice: dict[str, str]
) -> None:
    response = upload(client, alice, "ragged.csv", RAGGED_CSV)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file", "line 3"]
    assert error["msg"].startswith("line 3:") and "2 fields" in error["msg"]
    assert_nothing_left(app, settings)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"task": "clustering"}, ["body", "task"]),
        ({"image_size": "big"}, ["body", "image_size"]),
        ({"image_size": "0x4"}, ["body", "image_size"]),
        ({"name": "n" * 201}, ["body", "name"]),
        ({"target": "sepal_width", "format": "npz"}, ["body", "target"]),
    ],
)
def test_invalid_form_fields_are_422_at_the_field(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    alice: dict[str, str],
    fields: dict[str, str],
    loc: list[str],
) -> None:
    response = upload(client, alice, "iris.csv", IRIS_CSV, **fields)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert_nothing_left(app, settings)


def test_missing_file_is_422(client: TestClient, alice: dict[str, str]) -> None:
    body = '--x\r\nContent-Disposition: form-data; name="name"\r\n\r\niris\r\n--x--\r\n'
    headers = {**alice, "Content-Type": "multipart/form-data; boundary=x"}
    response = client.post("/v1/datasets", headers=headers, content=body.encode())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_truncated_multipart_body_is_400(client: TestClient, alice: dict[str, str]) -> None:
    headers = {**alice, "Content-Type": MULTIPART}
    response = client.post(
        "/v1/datasets", headers=headers, content=multipart_head("iris.csv") + IRIS_CSV
    )
    assert response.status_code == 400
    assert "closing boundary" in response.json()["detail"]


def test_too_large_by_content_length_is_413_before_reading(
    client: TestClient, app: FastAPI, settings: Settings, alice: dict[str, str]
) -> None:
    response = upload(client, alice, "big.csv", b"1" * (3 * MiB))
    assert response.status_code == 413
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file"] and "2,097,152 bytes" in error["msg"]
    assert_nothing_left(app, settings)


def test_chunked_upload_without_content_length_is_cut_off(
    client: TestClient, app: FastAPI, settings: Settings, alice: dict[str, str]
) -> None:
    headers = {**alice, "Content-Type": MULTIPART}
    response = client.post(
        "/v1/datasets", headers=headers, content=streamed_upload("big.csv", 3 * MiB)
    )
    assert response.request.headers.get("content-length") is None
    assert response.status_code == 413
    assert_nothing_left(app, settings)


def test_upload_stops_reading_the_body_at_the_limit(
    client: TestClient, app: FastAPI, settings: Settings, alice: dict[str, str]
) -> None:
    """The streamed count decides, whatever the headers say: the file stops at the limit."""
    chunks_sent = 0

    async def run() -> int:
        nonlocal chunks_sent
        chunks = streamed_upload("big.csv", 64 * MiB)
        messages: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal chunks_sent
            chunks_sent += 1
            return {"type": "http.request", "body": next(chunks), "more_body": True}

        async def send(message: MutableMapping[str, Any]) -> None:
            messages.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/datasets",
            "raw_path": b"/v1/datasets",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", alice["Authorization"].encode()),
                (b"content-type", MULTIPART.encode()),
                (b"content-length", b"1000"),
            ],
            "client": ("testclient", 50000),
            "server": ("testserver", 80),
            "app": app,
        }
        await app(scope, receive, send)
        return int(messages[0]["status"])

    assert anyio.run(run) == 413
    # 2 MiB of file in 64 KiB chunks is 32 of the 1,024 chunks; the body stops right there.
    assert chunks_sent <= 40
    assert_nothing_left(app, settings)


@pytest.mark.parametrize(("extra", "status"), [(0, 422), (1, 413)])
def test_the_limit_is_exact(
    client: TestClient, alice: dict[str, str], settings: Settings, extra: int, status: int
) -> None:
    """A file of exactly max_upload_bytes is read (and then found to hold no rows)."""
    headers = {**alice, "Content-Type": MULTIPART}
    body = streamed_upload("big.csv", settings.max_upload_bytes + extra)
    assert client.post("/v1/datasets", headers=headers, content=body).status_code == status


def test_a_failing_insert_leaves_no_files(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*_: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr("app.services.datasets._insert", fail)
    with pytest.raises(RuntimeError, match="database went away"):
        upload(client, alice, "iris.csv", IRIS_CSV)
    assert_nothing_left(app, settings)


# --- auth and tenancy --------------------------------------------------------------------

ROUTES = [
    ("POST", "/v1/datasets"),
    ("GET", "/v1/datasets"),
    ("GET", "/v1/datasets/builtin"),
    ("GET", f"/v1/datasets/{uuid.UUID(int=1)}"),
    ("DELETE", f"/v1/datasets/{uuid.UUID(int=1)}"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer bp_not-a-key"}])
def test_every_route_needs_a_valid_key(
    client: TestClient, method: str, path: str, headers: dict[str, str]
) -> None:
    files = {"file": ("iris.csv", IRIS_CSV)} if method == "POST" else None
    response = client.request(method, path, headers=headers, files=files)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_another_tenants_dataset_is_404_like_a_missing_one(
    client: TestClient, settings: Settings, alice: dict[str, str], bob: dict[str, str]
) -> None:
    dataset_id = created(client, alice, "iris")["id"]
    missing = str(uuid.UUID(int=7))
    for method in ("GET", "DELETE"):
        theirs = client.request(method, f"/v1/datasets/{dataset_id}", headers=bob)
        nobodys = client.request(method, f"/v1/datasets/{missing}", headers=bob)
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json()["detail"] == nobodys.json()["detail"].replace(missing, dataset_id)
    assert client.get(f"/v1/datasets/{dataset_id}", headers=alice).status_code == 200
    assert (settings.datasets_dir / dataset_id).is_dir()
    assert client.get("/v1/datasets", headers=bob).json() == {"data": [], "next_cursor": None}


def test_dataset_store_resolves_only_the_tenants_own_ids(
    client: TestClient, app: FastAPI, settings: Settings, alice: dict[str, str], bob: dict[str, str]
) -> None:
    dataset_id = created(client, alice, "iris")["id"]
    alice_id, bob_id = tenant_id(app, "alice"), tenant_id(app, "bob")
    with app.state.sessionmaker() as session, reading(session):
        info = dataset_store.dataset_info(session, alice_id, dataset_id)
        assert info is not None and info.input_shape == (2,) and info.num_classes == 2
        assert dataset_store.dataset_info(session, bob_id, dataset_id) is None
        assert dataset_store.dataset_info(session, bob_id, "builtin:nope") is None
        digits = dataset_store.dataset_info(session, bob_id, "builtin:digits")
        assert digits is not None and digits.input_shape == (8, 8, 1)
        with pytest.raises(dataset_store.UnknownDatasetError):
            dataset_store.open_dataset(session, settings, bob_id, dataset_id)


# --- list and built-ins ------------------------------------------------------------------


def test_list_is_newest_first_with_cursor_paging(client: TestClient, alice: dict[str, str]) -> None:
    ids = [created(client, alice, name)["id"] for name in ("first", "second", "third")]
    page = client.get("/v1/datasets", headers=alice, params={"limit": 2}).json()
    assert [d["id"] for d in page["data"]] == [ids[2], ids[1]]
    assert page["next_cursor"]
    rest = client.get(
        "/v1/datasets", headers=alice, params={"limit": 2, "cursor": page["next_cursor"]}
    ).json()
    assert [d["id"] for d in rest["data"]] == [ids[0]]
    assert rest["next_cursor"] is None
    everything = client.get("/v1/datasets", headers=alice).json()
    assert [d["name"] for d in everything["data"]] == ["third", "second", "first"]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"cursor": "not-a-cursor"}, ["query", "cursor"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 201}, ["query", "limit"]),
    ],
)
def test_bad_page_parameters_are_422(
    client: TestClient, alice: dict[str, str], params: dict[str, Any], loc: list[str]
) -> None:
    response = client.get("/v1/datasets", headers=alice, params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_builtin_list(client: TestClient, alice: dict[str, str]) -> None:
    response = client.get("/v1/datasets/builtin", headers=alice)
    assert response.status_code == 200
    page = response.json()
    assert page["next_cursor"] is None
    by_id = {d["id"]: d for d in page["data"]}
    assert set(by_id) == {
        f"builtin:{name}"
        for name in ("digits", "iris", "wine", "breast_cancer", "xor", "two_moons", "spirals")
    } | {f"builtin:{name}" for name in ("sine", "symmetry", "parity", "encoder")}
    digits = by_id["builtin:digits"]
    assert (digits["name"], digits["format"], digits["task"]) == (
        "digits",
        "builtin",
        "classification",
    )
    assert (digits["num_examples"], digits["input_shape"], digits["num_classes"]) == (
        1797,
        [8, 8, 1],
        10,
    )
    assert digits["size_bytes"] == 1797 * 64 * 4 + 1797 * 4  # float32 x, int32 y
    assert len(digits["sha256"]) == 64 and digits["created_at"] == "1970-01-01T00:00:00Z"
    assert by_id["builtin:sine"]["target_shape"] == [1]


# --- delete ------------------------------------------------------------------------------


@pytest.mark.parametrize("validation", [False, True])
def test_delete_is_409_while_a_queued_job_uses_it_then_204(
    client: TestClient, app: FastAPI, settings: Settings, alice: dict[str, str], validation: bool
) -> None:
    dataset_id = created(client, alice, "iris")["id"]
    job_id = add_job(
        app, tenant_id(app, "alice"), dataset_id, status="queued", validation=validation
    )
    conflict = client.delete(f"/v1/datasets/{dataset_id}", headers=alice)
    assert conflict.status_code == 409
    assert job_id in conflict.json()["detail"]
    assert (settings.datasets_dir / dataset_id).is_dir()

    with transaction(app.state.sessionmaker) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = "running"
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=alice).status_code == 409

    with transaction(app.state.sessionmaker) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = "succeeded"
    deleted = client.delete(f"/v1/datasets/{dataset_id}", headers=alice)
    assert deleted.status_code == 204 and deleted.content == b""
    assert not (settings.datasets_dir / dataset_id).exists()
    assert client.get(f"/v1/datasets/{dataset_id}", headers=alice).status_code == 404
    with app.state.sessionmaker() as session, reading(session):
        job = session.get(Job, job_id)
        assert job is not None and job.dataset_id is None and job.validation_dataset_id is None


def test_delete_without_jobs(client: TestClient, settings: Settings, alice: dict[str, str]) -> None:
    dataset_id = created(client, alice, "iris")["id"]
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=alice).status_code == 204
    assert leftovers(settings.data_dir) == []
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=alice).status_code == 404


# --- OpenAPI -----------------------------------------------------------------------------


def test_openapi_documents_bodies_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/datasets"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert {"file", "name", "format", "target", "task", "image_size"} <= set(form["properties"])
    assert {"201", "401", "413", "415", "422"} <= set(post["responses"])
    delete = spec["paths"]["/v1/datasets/{dataset_id}"]["delete"]
    assert {"204", "401", "404", "409"} <= set(delete["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["DatasetPublic"]["examples"][0]["num_classes"] == 10
    assert set(schemas["DatasetsPublic"]["properties"]) == {"data", "next_cursor"}
    assert schemas["DatasetsPublic"]["examples"]
    builtin = spec["paths"]["/v1/datasets/builtin"]["get"]["responses"]["200"]
    assert builtin["content"]["application/json"]["schema"]["$ref"].endswith("/DatasetsPublic")
