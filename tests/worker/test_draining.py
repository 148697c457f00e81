"""The drain flag: one worker's shutdown must never drain another that shares its data
directory (replicas of one compose service share the volume and have the same pids)."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from worker.draining import drain_flag


def test_workers_sharing_a_data_directory_have_their_own_flags(tmp_path: Path) -> None:
    shared = tmp_path / "shared-volume"
    one = Settings(data_dir=shared, worker_name="replica-1")
    two = Settings(data_dir=shared, worker_name="replica-2")
    assert drain_flag(one, 7) != drain_flag(two, 7)
    assert shared.resolve() not in drain_flag(one, 7).parents


def test_services_on_one_host_have_their_own_flags(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "one", worker_name="host")
    two = Settings(data_dir=tmp_path / "two", worker_name="host")
    assert drain_flag(one, 7) != drain_flag(two, 7)
