"""Shapes every resource shares: list pages, page queries and error bodies."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.pagination import MAX_CURSOR_LENGTH, decode_cursor

ItemT = TypeVar("ItemT")

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
# What the schema says of a cursor (documentation only: `_decodable` is the check). The
# format names the opaque token, so a client or a fuzzer knows it is not free text.
CURSOR_SCHEMA: dict[str, Any] = {
    "format": "page-cursor",
    "pattern": f"^[A-Za-z0-9_-]{{0,{MAX_CURSOR_LENGTH}}}$",  # empty: the first page
}


class Page(BaseModel, Generic[ItemT]):
    """A page of a list, newest first; pass `next_cursor` as `cursor` for the next page.

    Subclass it per resource (`class DatasetsPublic(Page[DatasetPublic])`) so the OpenAPI
    schema gets a readable name and an example.
    """

    data: list[ItemT]
    next_cursor: str | None = Field(
        description="opaque; null on the last page",
        json_schema_extra=CURSOR_SCHEMA,
        examples=[
            "MjAyNS0wMS0wMVQxMjowMDowMCswMDowMHwwYjdlOGY1Yy0zZjBhLTRjMWUtOWQyYi02YTVlNGMzYjJhMTk"
        ],
    )


class PageQuery(BaseModel):
    """`limit` and `cursor` query parameters: `Annotated[PageQuery, Query()]`.

    Resources with filters subclass it (`class JobsQuery(PageQuery): status: ...`).
    """

    limit: int = Field(
        DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="page size (at most 200)"
    )
    cursor: str | None = Field(
        None,
        description="the previous page's `next_cursor`, unchanged; absent for the first "
        'page. Opaque: any other value answers 422 at `["query", "cursor"]`',
        json_schema_extra=CURSOR_SCHEMA,
    )

    @field_validator("cursor")
    @classmethod
    def _decodable(cls, cursor: str | None) -> str | None:
        if not cursor:
            return None
        decode_cursor(cursor)  # raises ValueError, answered as a 422 at ["query", "cursor"]
        return cursor


class ErrorMessage(BaseModel):
    """An error answered with a message (401, 404, 409…)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "dataset not found"}]})

    detail: str


class ErrorItemPublic(BaseModel):
    """One problem, located: `loc` is the path to the field (or file part) at fault."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorList(BaseModel):
    """An error answered with located problems (413, 415, 422)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["body", "file", "line 3"],
                            "msg": "line 3: has 2 fields but the header (line 1) has 3; …",
                            "type": "dataset_invalid",
                        }
                    ]
                }
            ]
        }
    )

    detail: list[ErrorItemPublic]


class ErrorDetail(BaseModel):
    """An error answered either way: a message, or located problems."""

    detail: str | list[ErrorItemPublic]


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

_ERRORS: dict[int, tuple[type[BaseModel], str, Any]] = {
    400: (
        ErrorMessage,
        "malformed request body (unparseable JSON, broken multipart framing)",
        "There was an error parsing the body",
    ),
    401: (
        ErrorMessage,
        "missing or invalid API key",
        "missing or invalid API key: send 'Authorization: Bearer <key>'",
    ),
    404: (ErrorMessage, "no such resource for this API key's tenant", "dataset not found"),
    409: (ErrorMessage, "conflicts with the resource's state", "in use by a queued job …"),
    413: (
        ErrorDetail,
        "the request body exceeds a size limit (cut off while streaming): located problems "
        "for an upload, a message otherwise",
        [
            {
                "loc": ["body", "file"],
                "msg": "the file is larger than …",
                "type": "dataset_too_large",
            }
        ],
    ),
    415: (
        ErrorList,
        "unsupported upload format or content type",
        [{"loc": ["body", "format"], "msg": "cannot tell …", "type": "dataset_unsupported_format"}],
    ),
    422: (
        ErrorList,
        "invalid input; `loc` names the field, row, column, array or member at fault",
        [{"loc": ["body", "task"], "msg": "Input should be …", "type": "literal_error"}],
    ),
    429: (
        ErrorMessage,
        "over the key's request rate (BACKPROP_RATE_LIMIT) or a tenant quota "
        "(BACKPROP_MAX_ACTIVE_JOBS, BACKPROP_MAX_STORAGE_BYTES); `detail` names it",
        "this key made more than 20 requests in the last second (BACKPROP_RATE_LIMIT): …",
    ),
    503: (
        ErrorMessage,
        "the database is unreachable, busy or lost its connection; retry after "
        "`Retry-After` seconds",
        "the database connection was lost; retry the request",
    ),
}
_HEADERS: dict[int, dict[str, Any]] = {429: _RETRY_AFTER, 503: _RETRY_AFTER}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries, with schema and example, for these error statuses."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model, description, example = _ERRORS[code]
        responses[code] = {
            "model": model,
            "description": description,
            "content": {"application/json": {"example": {"detail": example}}},
        }
        if code in _HEADERS:
            responses[code]["headers"] = _HEADERS[code]
    return responses


# Every authenticated route: a missing or wrong key, the rate limit, a lost database.
AUTHENTICATED_ERRORS = (401, 429, 503)
