"""The storage layer: the same behaviour from the data directory and from an S3 protocol
server (moto's, on loopback), and the host-side cache of stored objects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain.storage import (
    LocalCache,
    LocalStorage,
    ObjectStorage,
    Storage,
    StorageError,
    check_key,
    put_tree,
    storage_for,
    unique_name,
)
from tests.app.files import leftovers, npz_bytes
from tests.object_store import CREDENTIALS, S3Server
from worker.stored_files import JobFiles

pytestmark = pytest.mark.xdist_group("object-store")

Headers = dict[str, str]


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "data")
    request.getfixturevalue("s3_credentials")
    server: S3Server = request.getfixturevalue("s3_server")
    settings = Settings(
        data_dir=tmp_path / "host",
        storage_url=server.new_bucket(),
        s3_endpoint_url=server.endpoint_url,
    )
    return storage_for(settings)


def _file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_stored_file_reads_back_whole_and_goes_away_when_deleted(
    store: Storage, tmp_path: Path
) -> None:
    content = os.urandom(3 << 20)  # several of the streams' blocks
    store.put(_file(tmp_path, "model.bin", content), "jobs/j1/model-abc.safetensors")
    assert store.exists("jobs/j1/model-abc.safetensors")
    assert store.local_path("jobs/j1/model-abc.safetensors").read_bytes() == content
    with store.open("jobs/j1/model-abc.safetensors") as stream:
        assert stream.read() == content
    store.delete("jobs/j1/model-abc.safetensors")
    store.delete("jobs/j1/model-abc.safetensors")  # again: not an error
    assert not store.exists("jobs/j1/model-abc.safetensors")
    with pytest.raises(StorageError, match="model-abc"):
        store.local_path("jobs/j1/model-abc.safetensors")


def test_a_folder_is_stored_listed_read_as_a_folder_and_deleted(
    store: Storage, tmp_path: Path
) -> None:
    folder = tmp_path / "src"
    for name, content in {"x.npy": b"x" * 10, "y.npy": b"y" * 5, "meta.json": b"{}"}.items():
        _file(tmp_path, name, content)
    put_tree(store, folder, "datasets/d1")
    store.put(_file(tmp_path / "elsewhere", "other", b"o"), "datasets/d2/x.npy")
    assert list(store.keys("datasets/d1")) == [
        "datasets/d1/meta.json",
        "datasets/d1/x.npy",
        "datasets/d1/y.npy",
    ]
    local = store.local_tree("datasets/d1")
    assert (local / "x.npy").read_bytes() == b"x" * 10 and (local / "meta.json").is_file()
    store.delete_tree("datasets/d1")
    assert list(store.keys("datasets/d1")) == [] and store.exists("datasets/d2/x.npy")


def test_keys_stay_inside_the_store() -> None:
    assert check_key("jobs/a/b.npz") == "jobs/a/b.npz"
    for bad in ("", "/etc/passwd", "../x", "jobs/../../x", "a\\b"):
        with pytest.raises(ValueError, match="not a storage key"):
            check_key(bad)
    assert unique_name("model", ".safetensors") != unique_name("model", ".safetensors")


def test_the_cache_keeps_the_recently_used_copies_within_its_cap(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache", max_bytes=250)
    fetched: list[str] = []

    def fetch(key: str, target: Path) -> None:
        fetched.append(key)
        target.write_bytes(b"." * 100)

    for key in ("a", "b"):
        cache.get(key, fetch)
    cache.get("a", fetch)  # a cache hit, and now the most recent
    os.utime(cache.path("b"), (1, 1))  # b: long unused
    cache.get("c", fetch)  # 300 bytes > 250: b goes
    assert fetched == ["a", "b", "c"]
    assert cache.path("a").is_file() and cache.path("c").is_file()
    assert not cache.path("b").exists()
    assert not list((tmp_path / "cache").glob("*.part"))


def test_a_failed_fetch_leaves_no_partial_copy(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache", max_bytes=1 << 20)

    def broken(key: str, target: Path) -> None:
        target.write_bytes(b"half")
        raise StorageError("connection reset")

    with pytest.raises(StorageError):
        cache.get("datasets/d/x.npy", broken)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_the_storage_url_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(storage_for(Settings(data_dir=tmp_path)), LocalStorage)
    s3 = Settings(data_dir=tmp_path, storage_url="s3://bucket/prefix")
    assert isinstance(storage_for(s3), ObjectStorage)
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        storage_for(Settings(data_dir=tmp_path, storage_url="gs://bucket"))


def test_an_upload_goes_to_the_bucket_and_its_delete_removes_it_there(
    s3_server: S3Server,
    s3_credentials: None,
    settings: Settings,
    client: TestClient,
    alice: Headers,
) -> None:
    settings.storage_url = s3_server.new_bucket()
    settings.s3_endpoint_url = s3_server.endpoint_url
    data = npz_bytes(x=np.zeros((20, 3), np.float32), y=np.arange(20) % 2)
    upload = client.post("/v1/datasets", files={"file": ("d.npz", data)}, headers=alice)
    assert upload.status_code == 201, upload.text
    dataset_id = upload.json()["id"]
    store = storage_for(settings)
    assert len(list(store.keys(f"datasets/{dataset_id}"))) == 3
    assert not (settings.data_dir / "datasets").exists()  # nothing kept on this host
    assert leftovers(settings.data_dir) == []
    deleted = client.delete(f"/v1/datasets/{dataset_id}", headers=alice)
    assert deleted.status_code == 204
    assert list(store.keys(f"datasets/{dataset_id}")) == []


def test_storage_migrate_copies_what_the_rows_name_once(
    s3_server: S3Server,
    s3_credentials: None,
    settings: Settings,
    client: TestClient,
    alice: Headers,
) -> None:
    data = npz_bytes(x=np.zeros((20, 3), np.float32), y=np.arange(20) % 2)
    upload = client.post("/v1/datasets", files={"file": ("d.npz", data)}, headers=alice)
    dataset_id = upload.json()["id"]
    (settings.data_dir / "xla-cache").mkdir()
    (settings.data_dir / "xla-cache" / "program").write_bytes(b"not a stored file")

    bucket = s3_server.new_bucket()
    env = {**os.environ, "BACKPROP_S3_ENDPOINT_URL": s3_server.endpoint_url}
    command = [sys.executable, "-m", "app.cli", "storage", "migrate", "--to", bucket]
    command += ["--data-dir", str(settings.data_dir)]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "copied 3 files" in first.stderr and f"BACKPROP_STORAGE_URL={bucket}" in first.stderr
    target = storage_for(
        settings.model_copy(
            update={"storage_url": bucket, "s3_endpoint_url": s3_server.endpoint_url}
        )
    )
    stored = sorted(target.keys())
    assert stored == sorted(storage_for(settings).keys(f"datasets/{dataset_id}"))  # no cache
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "copied 0 files (0 bytes), 3 already there" in again.stderr


def test_a_resumed_run_s_checkpoint_is_kept_over_an_abandoned_attempt_s(tmp_path: Path) -> None:
    files = JobFiles(Settings(data_dir=tmp_path, storage_url="s3://bucket/p"), "job")
    # An attempt recorded epochs 4 and 5 and died; the next one could not read them and
    # started over: its checkpoint at epoch 1 must survive, the stale ones go.
    recorded = [("r4", 4, "k4"), ("r5", 5, "k5"), ("r1", 1, "k1")]
    assert sorted(files.obsolete_checkpoints(recorded, current="r1")) == ["r4", "r5"]
    # In order: the newest two stay.
    recorded = [("r1", 1, "k1"), ("r2", 2, "k2"), ("r3", 3, "k3")]
    assert files.obsolete_checkpoints(recorded, current="r3") == ["r1"]
