"""Predictions from a job's trained model: `POST /v1/jobs/{id}/predict`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.deps import SessionDep, SettingsDep
from app.routers.jobs import JobDep, job_errors
from app.schemas.common import error_responses
from app.schemas.predict import PredictionPublic, PredictionRequest
from app.services.predict import ModelRef, PredictionService, model_ref, read_body

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401))

_SHAPE_422 = [
    {
        "loc": ["body", "inputs", 0],
        "msg": "inputs[0] has shape [64] but the model expects examples of shape [8, 8, 1] "
        "(inputs: a list of examples, each of shape [8, 8, 1])",
        "type": "shape_mismatch",
    }
]


def prediction_service(request: Request) -> PredictionService:
    service: PredictionService = request.app.state.predictions
    return service


def job_model(job: JobDep, session: SessionDep, settings: SettingsDep) -> ModelRef:
    """The caller's job's model file; 404 for another tenant's job or one without a model."""
    return model_ref(session, settings, job)


@router.post(
    "/{job_id}/predict",
    summary="Predict with the trained model",
    description="Runs up to 10,000 examples through the job's trained model (the one "
    "`GET /v1/jobs/{id}/model` serves). Classifiers also answer `classes`.",
    # The body is parsed and the answer rendered off the event loop (see the service), so
    # both are declared here for the OpenAPI document.
    response_model=PredictionPublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictionRequest.model_json_schema()}},
        }
    },
    responses=job_errors(
        404,
        413,
        422,
        descriptions={
            404: "no such job, or it has no model yet",
            413: "the body is larger than 10,000 examples of this model's input can be",
        },
        examples={422: _SHAPE_422},
    ),
)
async def predict(
    request: Request,
    model: Annotated[ModelRef, Depends(job_model)],
    service: Annotated[PredictionService, Depends(prediction_service)],
) -> Response:
    body = await read_body(request.headers, request.stream(), model.max_body_bytes)
    rendered = await service.predict(model, body)
    return Response(rendered, media_type="application/json")
