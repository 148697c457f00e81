"""Jobs: submit, list, get, cancel, metrics, model download."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import WithJsonSchema

from app.deps import CurrentTenant, QueueDep, SessionDep, SettingsDep
from app.domain.db.models import Job
from app.domain.errors import NotFound
from app.domain.status import JobStatus
from app.domain.submission import ROUTING_RULE
from app.schemas.common import error_responses
from app.schemas.jobs import (
    JobMetricsPublic,
    JobPublic,
    JobsPublic,
    JobsQuery,
)
from app.services import jobs, metrics_query
from core.spec.examples import DIGITS_CNN

_JOB = "5f0c6a1e-4d43-4a8e-9a53-2f6f0e8f1c2d"
# The `detail` of each error status, as the jobs API answers it.
_EXAMPLES: dict[int, Any] = {
    404: f"no job with id '{_JOB}'",
    409: f"job {_JOB} has already finished (status: succeeded)",
    422: [
        {
            "loc": ["body", "model", "layers", 5],
            "msg": "dense_5 (dense): … [input shape [64]]",
            "type": "value_error",
        }
    ],
}
_QUERY_422 = [{"loc": ["query", "limit"], "msg": "Input should be …", "type": "less_than_equal"}]


def job_errors(
    *codes: int, descriptions: dict[int, str] | None = None, examples: dict[int, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """`error_responses` with the jobs API's examples, descriptions and examples overridable."""
    responses = error_responses(*codes)
    details = {**_EXAMPLES, **(examples or {})}
    for code in codes:
        responses[code]["description"] = (descriptions or {}).get(
            code, responses[code]["description"]
        )
        if code in details:
            responses[code]["content"]["application/json"]["example"] = {"detail": details[code]}
    return responses


router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401))


def job_for_tenant(
    job_id: Annotated[str, Path(description="the job's id")],
    session: SessionDep,
    tenant: CurrentTenant,
) -> Job:
    """The caller's job, or 404 exactly as for an id that does not exist."""
    job = jobs.find_job(session, tenant.id, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job


JobDep = Annotated[Job, Depends(job_for_tenant)]

# Validated by `parse_spec` (clean `loc`s into the body), documented as the JobSpec schema,
# which is in the components because `JobPublic.spec` is a JobSpec.
JobSpecBody = Annotated[
    dict[str, Any],
    WithJsonSchema({"$ref": "#/components/schemas/JobSpec"}),
    Body(
        openapi_examples={
            "digits-cnn": {
                "summary": "API.md's CNN on the built-in digits",
                "value": DIGITS_CNN,
            }
        }
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="repeating a submission with the same key returns the first job (200)",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Submit a training job",
    response_description="The new job, queued",
    description="The spec is fully validated (schema, datasets, the model's shapes against "
    "the dataset, `init_from`) before the job is queued.\n\nDevice routing: " + ROUTING_RULE,
    responses={
        200: {"model": JobPublic, "description": "An earlier job with this Idempotency-Key"},
        **job_errors(400, 422),
    },
)
def submit_job(
    spec: JobSpecBody,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    queue: QueueDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    job, created = jobs.submit_job(session, queue, settings, tenant.id, spec, idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return job


@router.get(
    "", summary="List jobs, newest first", responses=job_errors(422, examples={422: _QUERY_422})
)
def list_jobs(
    query: Annotated[JobsQuery, Query()], session: SessionDep, tenant: CurrentTenant
) -> JobsPublic:
    return jobs.list_jobs(session, tenant.id, query)


@router.get("/{job_id}", summary="Get a job", responses=job_errors(404))
async def get_job(job: JobDep, session: SessionDep) -> JobPublic:
    # The most polled route: only a queued job needs another query (its queue position),
    # so only then is the work handed to a thread.
    if job.status == JobStatus.QUEUED:
        return await run_in_threadpool(jobs.job_public, session, job)
    return jobs.job_public(session, job)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a finished job and its files",
    description="Its metrics, checkpoints and model go with it, and its model's bytes stop "
    "counting towards the tenant's storage quota.",
    responses=job_errors(
        404, 409, descriptions={409: "the job is queued or running, or its sweep is running"}
    ),
)
def delete_job(job: JobDep, session: SessionDep, settings: SettingsDep) -> Response:
    jobs.delete_job(session, settings, job)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running one stops at its next check "
    "(within 2 seconds), so the returned job may still be `running`.",
    responses=job_errors(404, 409, descriptions={409: "the job has already finished"}),
)
def cancel_job(job: JobDep, session: SessionDep) -> JobPublic:
    return jobs.cancel_job(session, job)


@router.get(
    "/{job_id}/metrics",
    summary="A job's metric series",
    responses=job_errors(404, 422, examples={422: _QUERY_422}),
)
def job_metrics(
    job: JobDep,
    session: SessionDep,
    name: Annotated[list[str] | None, Query(description="series to return (repeatable)")] = None,
    # Bounded by the database's 64-bit integers (a larger one was a 500).
    since_step: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="only steps ≥ this")
    ] = None,
    max_points: Annotated[
        int | None,
        Query(
            ge=metrics_query.MIN_POINTS,
            le=100_000,
            description="downsample each series to at most this many points, keeping its "
            "first, last, minimum and maximum points and evenly spaced ones between",
        ),
    ] = None,
) -> JobMetricsPublic:
    return metrics_query.job_metrics(
        session, job.id, names=name or (), since_step=since_step, max_points=max_points
    )


@router.get(
    "/{job_id}/model",
    summary="Download the trained model (.safetensors)",
    response_class=FileResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "tensors named `<layer>.<param>`; the metadata holds the spec",
        },
        **job_errors(404, descriptions={404: "no such job, or it has no model yet"}),
    },
)
def download_model(job: JobDep, settings: SettingsDep) -> FileResponse:
    return FileResponse(
        jobs.model_file(settings, job),
        media_type="application/octet-stream",
        filename=f"{jobs.download_name(job)}.safetensors",
    )
