"""Errors a user causes, answered in FastAPI's `{"detail": …}` shape."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.domain.db.outage import is_database_unavailable
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
from app.domain.storage import StorageError
from core.errors import DatasetError, SpecError

RETRY_AFTER_SECONDS = 1  # a backend that restarts is back within seconds

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

log = logging.getLogger(__name__)


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


def unavailable(detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A lost or unreachable database is the server's trouble, not the request's: 503, retry.

    Anything else the database raises is a bug and stays a 500.
    """
    assert isinstance(exc, DBAPIError)
    if not is_database_unavailable(exc):
        raise exc
    if exc.connection_invalidated:
        return unavailable("the database connection was lost; retry the request")
    return unavailable("the database is unavailable; retry the request")


async def database_busy(request: Request, exc: Exception) -> JSONResponse:
    """Every pooled connection stayed in use for the pool's whole timeout."""
    return unavailable("the database is busy; retry the request")


async def storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The object store (or the data directory) failed a read or write: 503, retry. Its
    message stays in the log: it may name the bucket and the store's own error text."""
    log.warning("%s %s: storage error: %s", request.method, request.url.path, exc)
    return unavailable("the file store is unavailable; retry the request")


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, except that a 405's `Allow` lists every method of the path.

    Starlette names only the methods of the first route whose path matched, so
    `DELETE /v1/datasets` would answer `Allow: POST` though `GET` serves that path too.
    """
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        methods = allowed_methods(request.app, request.url.path)
        if methods:
            headers = {**(exc.headers or {}), "Allow": ", ".join(methods)}
            exc = StarletteHTTPException(exc.status_code, exc.detail, headers)
    return await http_exception_handler(request, exc)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document gives `path` (HEAD wherever GET is), sorted; where
    several templates match, those of the one with the fewest parameters."""
    templates: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "path_methods", None
    )
    if templates is None:
        templates = [
            (_template_regex(template), [m.upper() for m in item if m in _METHODS])
            for template, item in app.openapi().get("paths", {}).items()
        ]
        app.state.path_methods = templates
    # The most specific templates that match: `/v1/datasets/builtin` before `/{dataset_id}`.
    matches = [
        (regex.pattern.count("[^/]+"), ms) for regex, ms in templates if regex.fullmatch(path)
    ]
    fewest = min((params for params, _ in matches), default=0)
    methods = {m for params, ms in matches if params == fewest for m in ms}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _template_regex(template: str) -> re.Pattern[str]:
    """`/v1/jobs/{job_id}` → a regex matching `/v1/jobs/<one path segment>`."""
    parts = re.split(r"(\{[^/}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SpecError, spec_error)
    app.add_exception_handler(DatasetError, dataset_error)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(DBAPIError, database_unavailable)
    app.add_exception_handler(PoolTimeoutError, database_busy)
    app.add_exception_handler(StorageError, storage_unavailable)
