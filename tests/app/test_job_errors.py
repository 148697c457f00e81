"""How exceptions from preparing or training a job become API.md's job errors
(`JobError.of`, which the worker writes)."""

from __future__ import annotations

from typing import Any

from app.domain.values import JobError
from core.errors import SpecError, TrainingError


def job_error(exc: BaseException) -> dict[str, Any]:
    return JobError.of(exc).model_dump()


def test_training_errors_keep_their_code_and_position() -> None:
    error = job_error(TrainingError("timeout", "ran too long", epoch=2, step=40))
    assert error == {"code": "timeout", "message": "ran too long", "epoch": 2, "step": 40}


def test_spec_errors_are_invalid_spec_and_name_the_place() -> None:
    error = job_error(SpecError.at(("model", "layers", 0), "conv2d_0 needs an image"))
    assert error["code"] == "invalid_spec"
    assert "model.layers.0" in error["message"] and "conv2d_0" in error["message"]


def test_out_of_memory_is_recognised_from_python_and_from_xla() -> None:
    assert job_error(MemoryError())["code"] == "out_of_memory"
    xla = RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 17179869184 bytes.")
    error = job_error(xla)
    assert error["code"] == "out_of_memory"
    assert "batch_size" in error["message"]


def test_anything_else_is_internal_with_the_message() -> None:
    error = job_error(KeyError("weights"))
    assert error == {
        "code": "internal",
        "message": "KeyError: 'weights'",
        "epoch": None,
        "step": None,
    }
