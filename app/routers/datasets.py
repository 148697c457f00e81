"""Datasets: upload, list, get, delete, built-ins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from app.deps import CurrentTenant, SessionDep, SettingsDep
from app.domain.dataset_store import dataset_row
from app.domain.db.engine import reading
from app.domain.db.models import Dataset
from app.domain.errors import NotFound
from app.schemas.common import PageQuery, error_responses
from app.schemas.datasets import DatasetPublic, DatasetsPublic, upload_request_body
from app.services import datasets

_EXAMPLE_ID = "0b7e8f5c-3f0a-4c1e-9d2b-6a5e4c3b2a19"
_EXAMPLES: dict[int, Any] = {
    404: f"no dataset with id {_EXAMPLE_ID!r}",
    409: f"dataset {_EXAMPLE_ID} is used by a queued or running job (…); cancel the job or "
    "wait until it finishes, then delete the dataset",
    413: [
        {
            "loc": ["body", "file"],
            "msg": "the file is larger than this service's upload limit of 1,073,741,824 "
            "bytes; split the data or upload a smaller sample",
            "type": "dataset_too_large",
        }
    ],
    415: [
        {
            "loc": ["body", "format"],
            "msg": "cannot tell the format of 'data.xlsx' from its name; …",
            "type": "dataset_unsupported_format",
        }
    ],
    422: [
        {
            "loc": ["body", "file", "line 3"],
            "msg": "line 3: has 2 fields but the header (line 1) has 3; …",
            "type": "dataset_invalid",
        }
    ],
}


def dataset_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`error_responses` with dataset examples."""
    responses = error_responses(*codes)
    for code, response in responses.items():
        if code in _EXAMPLES:
            response["content"]["application/json"]["example"] = {"detail": _EXAMPLES[code]}
    return responses


router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401))


def dataset_for_tenant(
    dataset_id: Annotated[str, Path(description="the dataset's id")],
    session: SessionDep,
    tenant: CurrentTenant,
) -> Dataset:
    """The caller's dataset, or 404 exactly as for an id that does not exist."""
    with reading(session):
        dataset = dataset_row(session, tenant.id, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    return dataset


DatasetDep = Annotated[Dataset, Depends(dataset_for_tenant)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a dataset (csv, npz or image_zip)",
    description="`multipart/form-data` with the data in `file`. The body is streamed to "
    "disk and cut off (413) as soon as it passes the upload limit; the file is then "
    "converted once, so jobs never parse it again.",
    responses=dataset_errors(400, 413, 415, 422),
    openapi_extra={"requestBody": upload_request_body()},
)
async def upload_dataset(
    request: Request, session: SessionDep, settings: SettingsDep, tenant: CurrentTenant
) -> DatasetPublic:
    return await datasets.create_dataset(
        session, settings, tenant.id, request.headers, request.stream()
    )


@router.get("", summary="List datasets, newest first", responses=dataset_errors(422))
def list_datasets(
    page: Annotated[PageQuery, Query()], session: SessionDep, tenant: CurrentTenant
) -> DatasetsPublic:
    return datasets.list_datasets(session, tenant.id, page)


@router.get(
    "/builtin",
    summary="List the built-in datasets",
    description="Ids are `builtin:<name>`, as a job spec names them. `size_bytes` and "
    "`sha256` describe the arrays (x then y); `created_at` is 1970-01-01T00:00:00Z. One "
    "page: `next_cursor` is always null.",
)
def list_builtin_datasets(tenant: CurrentTenant) -> DatasetsPublic:
    return datasets.list_builtin_datasets()


@router.get("/{dataset_id}", summary="Get a dataset", responses=dataset_errors(404))
def get_dataset(dataset: DatasetDep) -> DatasetPublic:
    return DatasetPublic.model_validate(dataset)


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a dataset and its files",
    responses=dataset_errors(404, 409),
)
def delete_dataset(dataset: DatasetDep, session: SessionDep, settings: SettingsDep) -> Response:
    datasets.delete_dataset(session, settings, dataset)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
