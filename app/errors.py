"""Errors a user causes, answered in FastAPI's `{"detail": …}` shape."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from app.domain.errors import (
    Conflict,
    ContentTooLarge,
    DomainError,
    InvalidInput,
    MalformedRequest,
    NotFound,
    QuotaExceeded,
    Unavailable,
    UnsupportedMediaType,
)
from core.errors import DatasetError, SpecError

# The one place a domain error becomes an HTTP status (subclasses first match by MRO).
DOMAIN_ERROR_STATUS: dict[type[DomainError], int] = {
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    ContentTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    UnsupportedMediaType: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    MalformedRequest: status.HTTP_400_BAD_REQUEST,
    InvalidInput: status.HTTP_422_UNPROCESSABLE_CONTENT,
    QuotaExceeded: status.HTTP_429_TOO_MANY_REQUESTS,
    Unavailable: status.HTTP_500_INTERNAL_SERVER_ERROR,
}

DATASET_ERROR_STATUS = {
    "invalid": status.HTTP_422_UNPROCESSABLE_CONTENT,
    "too_large": status.HTTP_413_CONTENT_TOO_LARGE,
    "unsupported_format": status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
}

# `where` values of DatasetError that name a form field of the upload rather than the file.
UPLOAD_FORM_FIELDS = {"format", "task", "target", "image_size"}


async def spec_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    detail = [{**e.as_dict(), "loc": ["body", *e.loc]} for e in exc.errors]
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def dataset_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DatasetError)
    code = DATASET_ERROR_STATUS.get(exc.kind, status.HTTP_422_UNPROCESSABLE_CONTENT)
    if exc.where in UPLOAD_FORM_FIELDS:
        loc = ["body", exc.where]  # the form field at fault, not the file
    else:
        loc = ["body", "file"] + ([exc.where] if exc.where else [])
    detail = [{"loc": loc, "msg": str(exc), "type": f"dataset_{exc.kind}"}]
    return JSONResponse({"detail": detail}, status_code=code)


async def domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    code = next(
        (DOMAIN_ERROR_STATUS[kind] for kind in type(exc).__mro__ if kind in DOMAIN_ERROR_STATUS),
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
    detail: Any = str(exc) if exc.errors is None else [e.as_dict() for e in exc.errors]
    headers = {}
    if isinstance(exc, QuotaExceeded):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    return JSONResponse({"detail": detail}, status_code=code, headers=headers)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A lost database connection is the server's trouble, not the request's: 503, retry.

    Anything else the database raises is a bug and stays a 500.
    """
    assert isinstance(exc, DBAPIError)
    if not exc.connection_invalidated:
        raise exc
    return JSONResponse(
        {"detail": "the database connection was lost; retry the request"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SpecError, spec_error)
    app.add_exception_handler(DatasetError, dataset_error)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(DBAPIError, database_unavailable)
