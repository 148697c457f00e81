"""The data directory's disk fills up while a job trains.

Both ways a disk can be made full here: the data directory on a small tmpfs of its own,
filled up for real (where the test may mount one: root, and a kernel that lets it), and
the file writer's flush made to fail with ENOSPC as a full disk makes it (everywhere).
The disk fills right after one of the job's checkpoints, so the next file it writes (its
next checkpoint, or its model after the last epoch) cannot be written. The job is run in
this process by the runner, as a training process runs it, against a database outside
the data directory.

Expected: the job fails with `storage_full`, a message that says the data directory is
out of space, which file could not be written and what to do; the last good checkpoint
is byte for byte what it was, still recorded and still loadable; no temporary file is
left behind; and once there is room again the same worker runs the next job to the end.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import core.files
from app.config import Settings
from app.domain.db.engine import make_engine, make_sessionmaker, transaction
from app.domain.db.migrate import upgrade_to_head
from app.domain.db.models import Job, Metric, Tenant
from app.domain.db.types import new_id, utcnow
from app.domain.leases import claim_job
from app.domain.status import JobStatus
from core.spec import parse_spec
from tests.specs import digits_mlp
from worker.recorder import JobRecorder
from worker.runner import run_claimed_job

pytestmark = pytest.mark.xdist_group("chaos-backends")

WORKER = "disk-full-worker"
DISK_BYTES = 8 << 20  # the tmpfs: room for the job's checkpoints, then filled on purpose
LEFT_FREE = 4 << 10  # what filling leaves: less than a checkpoint (60 KiB) or model (20 KiB)
SPEC = digits_mlp(epochs=6, seed=0, checkpoint_every_epochs=1)


class Disk:
    """The data directory's disk: `fill` it (all but LEFT_FREE bytes), `free` it again."""

    def __init__(self, directory: Path, mounted: bool, monkeypatch: pytest.MonkeyPatch):
        self.directory = directory
        self.mounted = mounted
        self.full = False
        self.ballast = directory / "ballast"
        if not mounted:  # no filesystem of our own to fill: fail writes as a full one does
            real_flush = core.files.flush_to_disk

            def flush_to_disk(file: IO[Any]) -> None:
                if self.full:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                real_flush(file)

            monkeypatch.setattr(core.files, "flush_to_disk", flush_to_disk)

    def fill(self) -> None:
        self.full = True
        if self.mounted:
            stats = os.statvfs(self.directory)
            size = stats.f_bavail * stats.f_frsize - LEFT_FREE
            chunk = b"\0" * (1 << 20)
            with self.ballast.open("wb") as ballast:  # written, not sparse: tmpfs counts pages
                while size > 0:
                    size -= ballast.write(chunk[: min(size, len(chunk))])

    def free(self) -> None:
        self.full = False
        self.ballast.unlink(missing_ok=True)


def _mount_small_tmpfs(directory: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(directory)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture(params=["small filesystem", "injected ENOSPC"])
def disk(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Disk]:
    directory = tmp_path / "data"
    directory.mkdir()
    mounted = request.param == "small filesystem" and _mount_small_tmpfs(directory)
    if request.param == "small filesystem" and not mounted:
        pytest.skip("mounting a tmpfs needs root here; the injected ENOSPC case stands in")
    try:
        yield Disk(directory, mounted, monkeypatch)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=True)


@pytest.fixture
def settings(disk: Disk, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=disk.directory,
        database_url=f"sqlite:///{tmp_path / 'backprop.db'}",  # outside the full disk
        worker_name=WORKER,
        compilation_cache=False,
    )


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    upgrade_to_head(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def claimed_job(factory: sessionmaker[Session], spec: dict[str, Any]) -> str:
    """A job as `POST /v1/jobs` makes it, claimed by WORKER as its supervisor would."""
    with transaction(factory) as session:
        tenant = session.scalars(select(Tenant)).first() or Tenant(name="alice")
        session.add(tenant)
        session.flush()
        job = Job(
            id=new_id(),
            tenant_id=tenant.id,
            name="disk-full",
            status="queued",
            attempt=1,
            max_attempts=3,
            dataset=spec["dataset"],
            device="cpu",
            queue="cpu",
            spec=parse_spec(spec).model_dump(mode="json"),
            created_at=utcnow(),
        )
        session.add(job)
        session.flush()
        now = utcnow()
        assert claim_job(session, job.id, worker=WORKER, device="cpu", now=now, lease_seconds=60)
        return job.id


def read_job(factory: sessionmaker[Session], job_id: str) -> Job:
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


@pytest.mark.parametrize("fills_before", ["a checkpoint", "the model"])
def test_a_full_disk_fails_the_job_and_keeps_its_last_checkpoint(
    fills_before: str,
    disk: Disk,
    settings: Settings,
    factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    epochs = SPEC["training"]["epochs"]
    fill_at = 1 if fills_before == "a checkpoint" else epochs  # after this epoch's checkpoint
    job_id = claimed_job(factory, SPEC)
    good: dict[str, Any] = {}
    record_checkpoint = JobRecorder.on_checkpoint

    def fill_after(recorder: JobRecorder, path: str, epoch: int, step: int) -> None:
        record_checkpoint(recorder, path, epoch, step)
        if epoch == fill_at:
            good.update(path=Path(path), data=Path(path).read_bytes())
            disk.fill()

    monkeypatch.setattr(JobRecorder, "on_checkpoint", fill_after)

    assert run_claimed_job(settings, job_id, worker=WORKER, attempt=1) == JobStatus.FAILED

    job = read_job(factory, job_id)
    assert job.status == JobStatus.FAILED and job.error is not None
    if fills_before == "a checkpoint":
        failed_at = f"jobs/{job_id}/checkpoints/ckpt-{fill_at + 1:06d}.npz"
    else:
        failed_at = f"jobs/{job_id}/model.safetensors"
    assert job.error.code == "storage_full", job.error
    message = job.error.message
    assert "no space left on device in the data directory" in message, message
    assert f"while writing {failed_at}" in message, message
    assert "Free space in the data directory" in message, message
    assert str(settings.data_dir) not in message  # the server's own paths stay private
    assert job.error.epoch == min(fill_at + 1, epochs)

    # The last good checkpoint: still recorded, the same bytes, loadable.
    assert job.checkpoint_path == f"jobs/{job_id}/checkpoints/{good['path'].name}"
    assert job.checkpoint_epoch == fill_at
    assert good["path"].read_bytes() == good["data"]
    with np.load(good["path"], allow_pickle=False) as arrays:
        meta = json.loads(arrays["__meta__"].tobytes())
    assert meta["epoch"] == fill_at
    # Nothing half-written is left: no temporary file, no newer checkpoint, no model.
    newest = max((settings.job_dir(job_id) / "checkpoints").iterdir())
    assert newest == good["path"]
    assert not [p for p in settings.data_dir.rglob("*.tmp")]
    assert not (settings.job_dir(job_id) / "model.safetensors").exists()
    assert job.model_path is None
    # The metrics of every epoch trained were written, each once.
    with transaction(factory) as session:
        series = session.execute(
            select(Metric.epoch).where(Metric.job_id == job_id, Metric.name == "epoch_loss")
        )
        assert sorted(epoch for (epoch,) in series) == list(range(min(fill_at + 1, epochs)))

    # Room again: the same worker (this process) runs the next job to the end.
    disk.free()
    monkeypatch.setattr(JobRecorder, "on_checkpoint", record_checkpoint)
    next_job = claimed_job(factory, SPEC)
    assert run_claimed_job(settings, next_job, worker=WORKER, attempt=1) == JobStatus.SUCCEEDED
    model_path = read_job(factory, next_job).model_path
    assert model_path is not None and (settings.data_dir / model_path).is_file()
