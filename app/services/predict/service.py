"""Predictions for `POST /v1/jobs/{id}/predict`: which model, loaded once, run off the loop.

Parsing the body (up to 10,000 examples: megabytes of JSON), checking the inputs, the
jitted forward pass and rendering the answer all run in a worker thread, at most
`MAX_CONCURRENT_PREDICTIONS` at once, so the event loop stays free for other requests.
XLA already spreads one call over the CPU's cores, and waiting requests hold no thread
while they queue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import dataset_store
from app.domain.db.engine import reading
from app.domain.db.models import Job
from app.domain.errors import ContentTooLarge, InvalidInput, Unavailable
from app.schemas.predict import MAX_EXAMPLES, PredictionPublic, PredictionRequest
from app.services import jobs
from app.services.predict.cache import PredictorCache
from app.services.predict.inputs import input_array
from app.services.predict.predictor import Prediction, Predictor
from core.data import DatasetInfo
from core.errors import ErrorItem

log = logging.getLogger(__name__)

MAX_CONCURRENT_PREDICTIONS = 2
JSON_BYTES_PER_NUMBER = 32
MAX_BODY_BYTES_UNKNOWN_SHAPE = 256 << 20  # the dataset was deleted since training
# Losses that only make sense for classes; other losses follow the dataset's task.
CLASSIFICATION_LOSSES = frozenset({"cross_entropy", "binary_cross_entropy"})
CLASSIFICATION_METRICS = frozenset({"accuracy", "top_k_accuracy"})

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModelRef:
    """A job's model file, at one version, and what loading it needs to know."""

    job_id: str
    path: Path
    size_bytes: int
    mtime_ns: int
    classifier: bool
    dataset_input_shape: Shape | None

    @property
    def cache_key(self) -> Hashable:
        return (self.job_id, str(self.path), self.size_bytes, self.mtime_ns)

    @property
    def max_body_bytes(self) -> int:
        """The most a valid request for this model can take: 10,000 examples of its input
        size at a generous 32 bytes of JSON per number. A body past it is refused while it
        streams (413), before it is buffered."""
        if self.dataset_input_shape is None:
            return MAX_BODY_BYTES_UNKNOWN_SHAPE
        numbers = MAX_EXAMPLES * math.prod(self.dataset_input_shape)
        return numbers * JSON_BYTES_PER_NUMBER + (1 << 20)


async def read_body(headers: Mapping[str, str], body: AsyncIterable[bytes], limit: int) -> bytes:
    """A request body from its chunks, never buffered past `limit` bytes.

    Raises:
      ContentTooLarge: as soon as the body passes `limit`, or at once when `headers`'
        Content-Length says it will.
    """
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks, size = [], 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def body_too_large(limit: int) -> ContentTooLarge:
    return ContentTooLarge(
        f"the request body is over {limit:,} bytes, more than {MAX_EXAMPLES:,} examples of "
        "this model's input can take: send fewer examples per request",
    )


def model_ref(session: Session, settings: Settings, job: Job) -> ModelRef:
    """The job's model; 404 until the worker has written it (as `GET /model` answers)."""
    path = jobs.model_file(settings, job)
    stat = path.stat()
    with reading(session):
        info = dataset_store.dataset_info(session, job.tenant_id, job.dataset)
    return ModelRef(
        job_id=job.id,
        path=path,
        size_bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        classifier=is_classifier(job.spec, info),
        dataset_input_shape=None if info is None else tuple(info.input_shape),
    )


def is_classifier(spec: dict[str, Any], dataset: DatasetInfo | None) -> bool:
    """Whether a job's model predicts classes: by its loss, else its dataset's task, else
    (the dataset deleted since) whether it was scored with a classification metric."""
    if spec["loss"]["type"] in CLASSIFICATION_LOSSES:
        return True
    if dataset is not None:
        return dataset.task == "classification"
    return any(metric["type"] in CLASSIFICATION_METRICS for metric in spec.get("metrics", []))


class PredictionService:
    """The process's loaded models and the cap on concurrent predictions."""

    def __init__(self, cache_size: int):
        self.cache = PredictorCache(cache_size)
        self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_PREDICTIONS)

    async def predict(self, ref: ModelRef, body: bytes) -> str:
        """Run a request body's `inputs` through the model of `ref`, in a worker thread.

        Returns:
          the PredictionPublic, already rendered as JSON (`classes` only for classifiers).

        Raises:
          InvalidInput: a body that is not a PredictionRequest, or inputs that do not fit
            the model.
          Unavailable: the stored model file cannot be loaded.
        """
        return await anyio.to_thread.run_sync(self._predict_now, ref, body, limiter=self._limiter)

    def _predict_now(self, ref: ModelRef, body: bytes) -> str:
        inputs = parse_request(body).inputs
        predictor = self.cache.get_or_load(ref.cache_key, lambda: _load(ref))
        prediction = predictor.predict(input_array(inputs, predictor.input_shape))
        return _public(prediction).model_dump_json(exclude_none=True)


def parse_request(body: bytes) -> PredictionRequest:
    """The JSON body as a PredictionRequest, or InvalidInput located in the body.

    The errors keep `loc`, `msg` and `type` only: echoing the `input` back could mean
    10,001 examples in an error message.
    """
    try:
        return PredictionRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            ErrorItem(("body", *error["loc"]), error["msg"], error["type"])
            for error in exc.errors(include_url=False)
        ]
        raise InvalidInput.of(errors) from None


def _load(ref: ModelRef) -> Predictor:
    try:
        return Predictor.from_file(
            ref.path, classifier=ref.classifier, fallback_input_shape=ref.dataset_input_shape
        )
    except OSError as exc:  # its message would show the server's paths
        log.exception("job %s: reading the model file failed", ref.job_id)
        raise Unavailable(f"the model file of job {ref.job_id} is unreadable") from exc
    except ValueError as exc:
        raise Unavailable(f"the model of job {ref.job_id} cannot be loaded: {exc}") from exc


def _public(prediction: Prediction) -> PredictionPublic:
    classes = None if prediction.classes is None else prediction.classes.tolist()
    return PredictionPublic(outputs=_json_values(prediction.outputs), classes=classes)


def _json_values(array: np.ndarray) -> list[Any]:
    """Nested lists of floats; JSON has no NaN or Infinity, so those become null."""
    finite = np.isfinite(array)
    if finite.all():
        values: list[Any] = array.tolist()
        return values
    values_or_none = array.astype(object)
    values_or_none[~finite] = None
    nulled: list[Any] = values_or_none.tolist()
    return nulled
