"""What services raise when a request cannot be done: HTTP-free, mapped to statuses in one
place (`app.errors`). Each carries a message that says what is wrong and how to go on."""

from __future__ import annotations

from core.errors import ErrorItem


class DomainError(Exception):
    """A request the domain refuses; `str(error)` is the message a user sees.

    `errors`, when given, are the problems one by one in FastAPI's validation shape, each
    `loc` complete (`("body", "file")`, `("header", "content-type")`); the API answers
    them as the `detail` list instead of the message.
    """

    def __init__(self, message: str, errors: list[ErrorItem] | None = None):
        super().__init__(message)
        self.errors = errors


class NotFound(DomainError):
    """No such resource for this tenant (another tenant's resource is not found either)."""


class Conflict(DomainError):
    """The resource is in a state that forbids the request (a finished job, a used dataset)."""


class ContentTooLarge(DomainError):
    """A body or upload over its limit."""


class UnsupportedMediaType(DomainError):
    """A body in a format the route does not take."""


class MalformedRequest(DomainError):
    """A body that cannot be read at all (broken multipart framing, say)."""


class InvalidInput(DomainError):
    """Input that parses but does not fit (422); give it `errors`."""

    @classmethod
    def of(cls, errors: list[ErrorItem]) -> InvalidInput:
        return cls("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors), errors)


class QuotaExceeded(DomainError):
    """A tenant over one of its quotas (429); the message names the quota, and
    `retry_after_seconds` says when trying again makes sense."""

    def __init__(self, message: str, retry_after_seconds: int):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(DomainError):
    """Something the request needs is broken or gone on the server's side (an unreadable
    model file): the server's trouble, not the request's."""
