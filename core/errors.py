"""Errors a user can cause, each carrying where it happened and how to fix it.

The API turns `SpecError` into a 422 whose `loc` points into the request body, and the
worker turns `TrainingError` into a job error with a code; neither is ever retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ErrorItem:
    """One problem in a spec or a dataset, shaped like a FastAPI validation error."""

    loc: Loc
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class SpecError(ValueError):
    """A JobSpec that cannot run: schema errors or a shape mismatch against the dataset."""

    def __init__(self, errors: list[ErrorItem]):
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))

    @classmethod
    def at(cls, loc: Loc, msg: str, type: str = "value_error") -> SpecError:
        return cls([ErrorItem(loc, msg, type)])


class DatasetError(ValueError):
    """An upload that cannot become a dataset.

    `kind` tells the API which status to answer: `invalid` (422), `too_large` (413) or
    `unsupported_format` (415). `where` names the row, column, array or archive member.
    """

    def __init__(self, msg: str, *, kind: str = "invalid", where: str | None = None):
        self.kind = kind
        self.where = where
        super().__init__(msg)


class FitError(ValueError):
    """Tensors that do not fit a spec's model (`core.fit.fit_check`); the message names each
    tensor at fault. Callers that answer with their own error type wrap it."""


@dataclass
class TrainingError(Exception):
    """A run that stopped because of something in the spec or the data.

    `code` is one of API.md's job error codes (`non_finite_loss`, `out_of_memory`,
    `timeout`, `invalid_spec`, …).
    """

    code: str
    message: str
    epoch: int | None = None
    step: int | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "epoch": self.epoch, "step": self.step}
