"""Datasets: receive an upload, convert it once, list, show built-ins, delete."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.domain.dataset_store import (
    BUILTIN_CREATED_AT,
    builtin_fingerprint,
    builtin_ref,
    dataset_directory,
)
from app.domain.db.engine import reading
from app.domain.db.models import Dataset as DatasetRow
from app.domain.db.models import Job
from app.domain.db.types import new_id
from app.pagination import newest_first_page
from app.schemas.common import PageQuery
from app.schemas.datasets import DatasetPublic, DatasetsPublic, DatasetUploadForm
from app.services.upload_stream import ReceivedUpload, receive_upload
from core.data import (
    BUILDERS,
    DatasetInfo,
    Limits,
    infer_format,
    load_builtin,
    load_upload,
    save_converted,
)

logger = logging.getLogger(__name__)

UPLOADS_DIR = ".uploads"  # under data_dir: uploads in flight, deleted when handled
ACTIVE_JOB_STATUSES = ("queued", "running")
DEFAULT_NAME = "dataset"


async def create_dataset(
    session: Session,
    settings: Settings,
    tenant_id: str,
    headers: Mapping[str, str],
    body: AsyncGenerator[bytes, None],
) -> DatasetPublic:
    """Stream an upload to disk, convert it once into `datasets_dir/<id>/`, add its row.

    On any failure no temporary file, no dataset directory and no row remain.
    """
    async with receive_upload(
        headers,
        body,
        directory=settings.data_dir / UPLOADS_DIR,
        max_file_bytes=settings.max_upload_bytes,
    ) as upload:
        form = _validated_form(upload.fields)
        dataset_id = new_id()
        directory = settings.datasets_dir / dataset_id
        try:
            limits = Limits(max_bytes=settings.max_upload_bytes)
            info = await run_in_threadpool(_convert, upload, form, directory, limits)
            row = DatasetRow(
                id=dataset_id,
                tenant_id=tenant_id,
                **described(info),
                size_bytes=upload.size_bytes,
                sha256=upload.sha256,
                storage_path=directory.relative_to(settings.data_dir).as_posix(),
            )
            await run_in_threadpool(_insert, session, row)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    return DatasetPublic.model_validate(row)


def _validated_form(fields: Mapping[str, str]) -> DatasetUploadForm:
    try:
        return DatasetUploadForm.model_validate(fields)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from exc


def _convert(
    upload: ReceivedUpload, form: DatasetUploadForm, directory: Path, limits: Limits
) -> DatasetInfo:
    """Parse the upload (CPU-heavy: runs in a worker thread) and save the arrays."""
    dataset = load_upload(
        upload.path,
        name=form.name or default_name(upload.filename),
        # Inferred here: the temporary file's own name says nothing about the format.
        format=form.format or infer_format(upload.filename or ""),
        target=form.target,
        task=form.task,
        image_size=form.image_size,
        limits=limits,
    )
    save_converted(dataset, directory)
    return dataset.info


def _insert(session: Session, row: DatasetRow) -> None:
    session.add(row)
    session.commit()


def default_name(filename: str | None) -> str:
    """The file name without folders or extension: `C:\\data\\digits.csv` → `digits`."""
    base = re.split(r"[\\/]", filename or "")[-1]
    return PurePosixPath(base).stem[:200] or DEFAULT_NAME


def list_datasets(session: Session, tenant_id: str, page: PageQuery) -> DatasetsPublic:
    """The tenant's uploads, newest first."""
    with reading(session):
        rows, next_cursor = newest_first_page(
            session,
            select(DatasetRow).where(DatasetRow.tenant_id == tenant_id),
            created_at=DatasetRow.created_at,
            id=DatasetRow.id,
            limit=page.limit,
            cursor=page.cursor,
        )
    data = [DatasetPublic.model_validate(row) for row in rows]
    return DatasetsPublic(data=data, next_cursor=next_cursor)


def list_builtin_datasets() -> DatasetsPublic:
    """Every built-in, in registry order, as one page."""
    return DatasetsPublic(data=[builtin_public(name) for name in BUILDERS], next_cursor=None)


def described(info: DatasetInfo) -> dict[str, Any]:
    """What a dataset's row and its public body say of its content."""
    return {
        "name": info.name,
        "format": info.format,
        "task": info.task,
        "num_examples": info.num_examples,
        "input_shape": list(info.input_shape),
        "target_shape": list(info.target_shape),
        "num_classes": info.num_classes,
        "class_names": info.class_names,
    }


def builtin_public(name: str) -> DatasetPublic:
    info = load_builtin(name).info
    size_bytes, sha256 = builtin_fingerprint(name)
    return DatasetPublic(
        id=builtin_ref(name),
        **described(info),
        size_bytes=size_bytes,
        sha256=sha256,
        created_at=BUILTIN_CREATED_AT,
    )


def delete_dataset(session: Session, settings: Settings, row: DatasetRow) -> None:
    """Delete a dataset's row, then its files; 409 while a queued or running job uses it.

    Finished jobs that used it keep its id in `Job.dataset`; their foreign keys are
    cleared so the row can go.
    """
    uses = or_(Job.dataset_id == row.id, Job.validation_dataset_id == row.id)
    active = session.scalars(
        select(Job.id).where(uses, Job.status.in_(ACTIVE_JOB_STATUSES)).limit(5)
    ).all()
    if active:
        raise _in_use(row.id, list(active))
    for column in (Job.dataset_id, Job.validation_dataset_id):
        session.execute(
            update(Job)
            .where(column == row.id, Job.status.not_in(ACTIVE_JOB_STATUSES))
            .values({column: None})
        )
    session.delete(row)
    try:
        session.commit()
    except IntegrityError as exc:  # a job referencing it was submitted meanwhile
        session.rollback()
        raise _in_use(row.id, []) from exc
    _remove_files(dataset_directory(settings, row))


def _in_use(dataset_id: str, job_ids: list[str]) -> HTTPException:
    jobs = f" ({', '.join(job_ids)})" if job_ids else ""
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"dataset {dataset_id} is used by a queued or running job{jobs}; cancel the job or "
        "wait until it finishes, then delete the dataset",
    )


def _remove_files(directory: Path) -> None:
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError:  # the row is gone already; leftover files are only wasted space
        logger.warning("could not remove %s", directory, exc_info=True)
