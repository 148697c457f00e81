"""Datasets: receive an upload, convert it once, list, show built-ins, delete."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
from pydantic import ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain.dataset_store import (
    BUILTIN_CREATED_AT,
    builtin_fingerprint,
    builtin_ref,
)
from app.domain.db.engine import reading
from app.domain.db.models import Dataset as DatasetRow
from app.domain.db.models import Job
from app.domain.db.types import new_id
from app.domain.errors import Conflict, InvalidInput
from app.domain.quotas import check_storage_quota, storage_exceeded, storage_room
from app.domain.status import ACTIVE_STATUSES
from app.domain.storage import DATASETS_PREFIX, Storage, put_tree, storage_for
from app.pagination import newest_first_page
from app.schemas.common import PageQuery
from app.schemas.datasets import DatasetPublic, DatasetsPublic, DatasetUploadForm
from app.services.upload_stream import ReceivedUpload, file_too_large, receive_upload
from core.data import (
    BUILDERS,
    DatasetInfo,
    Limits,
    infer_format,
    load_builtin,
    load_upload,
    save_converted,
)
from core.data.storage import info_to_json
from core.errors import ErrorItem

logger = logging.getLogger(__name__)

UPLOADS_DIR = ".uploads"  # under data_dir: uploads in flight, deleted when handled
DEFAULT_NAME = "dataset"


async def create_dataset(
    session: Session,
    settings: Settings,
    tenant_id: str,
    headers: Mapping[str, str],
    body: AsyncGenerator[bytes, None],
) -> DatasetPublic:
    """Stream an upload to disk, convert it once into `datasets_dir/<id>/`, add its row.

    On any failure no temporary file, no dataset directory and no row remain. A tenant
    near its storage quota has the upload cut off as soon as it passes the room left.
    """
    room = await anyio.to_thread.run_sync(_storage_room, session, settings, tenant_id)
    cap = settings.max_upload_bytes
    too_large: Callable[[int], Exception] = file_too_large
    if room is not None and room < cap:  # the quota binds first: cut off at the room left
        limit = settings.max_storage_bytes or 0
        more = f"; this upload is larger than the {room:,} bytes left"
        cap, too_large = room, lambda _: storage_exceeded(limit - room, limit, more)
    async with receive_upload(
        headers,
        body,
        directory=settings.data_dir / UPLOADS_DIR,
        max_file_bytes=cap,
        too_large=too_large,
    ) as upload:
        form = _validated_form(upload.fields)
        dataset_id = new_id()
        key = f"{DATASETS_PREFIX}/{dataset_id}"
        store = storage_for(settings)
        # Converted where the store wants it written: in place in the data directory, or a
        # local folder that is then streamed to the object store and removed.
        directory = store.scratch(key)
        try:
            limits = Limits(max_bytes=settings.max_upload_bytes)
            info = await anyio.to_thread.run_sync(_convert, upload, form, directory, limits)
            await anyio.to_thread.run_sync(put_tree, store, directory, key)
            row = DatasetRow(
                id=dataset_id,
                tenant_id=tenant_id,
                **described(info),
                size_bytes=upload.size_bytes,
                sha256=upload.sha256,
                storage_path=key,
            )
            await anyio.to_thread.run_sync(_insert, session, settings, row)
        except BaseException:
            await anyio.to_thread.run_sync(_remove_files, store, key)
            raise
        finally:
            if not store.in_place:
                shutil.rmtree(directory, ignore_errors=True)
    return DatasetPublic.model_validate(row)


@dataclass(frozen=True)
class FormFieldError(ErrorItem):
    """A form field's validation error shaped as FastAPI shows its own: the value sent is
    echoed back as `input` (the form fields hold 64 KiB at most)."""

    input: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "loc": list(self.loc), "msg": self.msg, "input": self.input}


def _validated_form(fields: Mapping[str, str]) -> DatasetUploadForm:
    try:
        return DatasetUploadForm.model_validate(fields)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise InvalidInput.of(
            [
                FormFieldError(("body", *error["loc"]), error["msg"], error["type"], error["input"])
                for error in errors
            ]
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


def _storage_room(session: Session, settings: Settings, tenant_id: str) -> int | None:
    with reading(session):
        return storage_room(session, settings, tenant_id)


def _insert(session: Session, settings: Settings, row: DatasetRow) -> None:
    with session.begin():  # uploads at once each saw room; together they may not fit
        check_storage_quota(session, settings, row.tenant_id, adding=row.size_bytes)
        session.add(row)


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
    """What a dataset's row and its public body say of its content: the stored info less
    the loader's private `extra`."""
    return {key: value for key, value in info_to_json(info).items() if key != "extra"}


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
    """Delete a dataset's row, then its files; Conflict while a queued or running job uses it.

    Finished jobs that used it keep its id in `Job.dataset`; their foreign keys are
    cleared so the row can go.
    """
    # Read before the transaction: a rollback expires `row`, and reloading it would need one.
    dataset_id, key = row.id, row.storage_path
    uses = or_(Job.dataset_id == dataset_id, Job.validation_dataset_id == dataset_id)
    try:
        with session.begin():
            active = session.scalars(
                select(Job.id).where(uses, Job.status.in_(ACTIVE_STATUSES)).limit(5)
            ).all()
            if active:
                raise _in_use(dataset_id, list(active))
            for column in (Job.dataset_id, Job.validation_dataset_id):
                session.execute(
                    update(Job)
                    .where(column == dataset_id, Job.status.not_in(ACTIVE_STATUSES))
                    .values({column: None})
                )
            session.delete(row)
    except IntegrityError as exc:  # a job referencing it was submitted meanwhile
        raise _in_use(dataset_id, []) from exc
    _remove_files(storage_for(settings), key)


def _in_use(dataset_id: str, job_ids: list[str]) -> Conflict:
    jobs = f" ({', '.join(job_ids)})" if job_ids else ""
    return Conflict(
        f"dataset {dataset_id} is used by a queued or running job{jobs}; cancel the job or "
        "wait until it finishes, then delete the dataset",
    )


def _remove_files(store: Storage, key: str) -> None:
    try:
        store.delete_tree(key)
    except OSError:  # the row is gone already; leftover files are only wasted space
        logger.warning("could not remove %s from %s", key, store.url, exc_info=True)
