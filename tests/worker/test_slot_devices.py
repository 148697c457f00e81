"""A GPU worker's devices are split between its slots: with 8 GPUs, `--concurrency 8`
runs eight 1-GPU jobs at once, `--concurrency 1` one job of up to 8 GPUs."""

from __future__ import annotations

import pytest

from worker import registry
from worker.registry import WorkerIdentity
from worker.spares import child_environment


def _slot(monkeypatch: pytest.MonkeyPatch, index: int | None) -> None:
    monkeypatch.setattr(registry, "current_process_index", lambda: index)


@pytest.mark.parametrize(
    ("devices", "concurrency", "per_slot"),
    [(8, 8, 1), (8, 4, 2), (8, 1, 8), (8, 3, 2), (2, 4, 2)],  # fewer GPUs than slots: share
)
def test_each_slot_gets_an_even_share_of_the_gpus(
    devices: int, concurrency: int, per_slot: int
) -> None:
    identity = WorkerIdentity("gpu-host", ("gpu",), True, concurrency, devices)
    assert identity.slot_devices == per_slot


def test_a_slot_s_training_processes_see_only_its_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    identity = WorkerIdentity("gpu-host", ("gpu",), True, concurrency=4, devices=8)
    seen = []
    for index in range(4):
        _slot(monkeypatch, index)
        seen.append(identity.slot_visible_gpus({}))
    assert seen == ["0,1", "2,3", "4,5", "6,7"]
    # Named by the worker's own CUDA_VISIBLE_DEVICES when it has one.
    _slot(monkeypatch, 1)
    assert identity.slot_visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5,6,7,0,1,2,4"}) == "6,7"
    assert child_environment("gpu", "6,7")["CUDA_VISIBLE_DEVICES"] == "6,7"


def test_one_slot_or_a_cpu_worker_sees_every_device(monkeypatch: pytest.MonkeyPatch) -> None:
    _slot(monkeypatch, 0)
    assert WorkerIdentity("g", ("gpu",), True, 1, 8).slot_visible_gpus({}) is None
    cpu = WorkerIdentity("c", ("cpu",), False, 4, 4)
    assert cpu.slot_devices == 4 and cpu.slot_visible_gpus({}) is None
    assert "CUDA_VISIBLE_DEVICES" not in child_environment("cpu", None)
