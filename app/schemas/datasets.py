"""What the datasets API takes (the upload's form fields) and shows (the Dataset body)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from app.schemas.common import Page
from core.data import Task

_DIGITS_EXAMPLE: dict[str, Any] = {
    "id": "0b7e8f5c-3f0a-4c1e-9d2b-6a5e4c3b2a19",
    "name": "digits",
    "format": "csv",
    "task": "classification",
    "num_examples": 1797,
    "input_shape": [64],
    "target_shape": [],
    "num_classes": 10,
    "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    "size_bytes": 123456,
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "created_at": "2025-01-01T12:00:00Z",
}


class DatasetPublic(BaseModel):
    """A dataset (API.md, "Dataset body"): an upload, converted once, or a built-in."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_extra={"examples": [_DIGITS_EXAMPLE]}
    )

    id: str = Field(description='a UUID, or "builtin:<name>" for a built-in dataset')
    name: str
    format: str = Field(description="csv | npz | image_zip, or builtin")
    task: Task
    num_examples: int
    input_shape: list[int] = Field(description="one example's feature shape")
    target_shape: list[int] = Field(description="[] for class indices; [k] for regression")
    num_classes: int | None = Field(description="classification only")
    class_names: list[str] | None = Field(description="labels in class-index order")
    size_bytes: int = Field(
        description="the uploaded file's size; for a built-in, the bytes of its arrays"
    )
    sha256: str = Field(
        description="hex SHA-256 of the uploaded file; for a built-in, of its arrays' bytes "
        "(x then y, C order)"
    )
    created_at: datetime = Field(description="upload time; 1970-01-01T00:00:00Z for built-ins")


class DatasetsPublic(Page[DatasetPublic]):
    """A page of datasets, newest first; pass `next_cursor` as `cursor` for the next page."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"data": [_DIGITS_EXAMPLE], "next_cursor": None}]}
    )


def _parse_image_size(value: object) -> object:
    """'28,28', '28x28' or '28' (a square) → (height, width); other values pass through."""
    if not isinstance(value, str):
        return value
    parts = re.split(r"\s*[x×,]\s*", value.strip().lower())
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(re.fullmatch(r"[0-9]{1,9}", part) for part in parts):
        raise ValueError(
            "image_size is 'height,width' (e.g. '28,28'), 'HEIGHTxWIDTH' or one number for a square"
        )
    height, width = int(parts[0]), int(parts[1])
    if height < 1 or width < 1:
        raise ValueError("image_size must be positive")
    return height, width


ImageSize = Annotated[
    tuple[int, int],
    BeforeValidator(_parse_image_size),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*\d+\s*([x×,]\s*\d+\s*)?$",
            "description": "height,width (or HEIGHTxWIDTH, or one number for a square) "
            "that every image is resized to; image_zip only; default the first image's size",
            "examples": ["28,28"],
        }
    ),
]


class DatasetUploadForm(BaseModel):
    """The form fields of `POST /v1/datasets` besides `file`; empty values count as absent."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"name": "digits", "format": "csv", "target": "label"}],
        },
    )

    name: str | None = Field(
        None, min_length=1, max_length=200, description="default: the file name, less extension"
    )
    format: str | None = Field(
        None,
        max_length=32,
        description="csv | npz | image_zip; default from the file name (.csv, .npz, .zip); "
        "anything else answers 415",
    )
    target: str | None = Field(
        None, max_length=1000, description="csv only: the target column; default the last"
    )
    task: Task | None = Field(None, description="default: inferred from the targets")
    image_size: ImageSize | None = None

    @field_validator("format")
    @classmethod
    def _lower_case(cls, format: str | None) -> str | None:
        return None if format is None else format.strip().lower()

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value != ""}
        return data


def upload_request_body() -> dict[str, Any]:
    """The OpenAPI `requestBody` of the upload (read from the stream, not by FastAPI)."""
    schema = DatasetUploadForm.model_json_schema()
    for field in schema["properties"].values():
        # A form field is text or absent; it cannot be null (a "null" would be the text).
        branches = [b for b in field.pop("anyOf", []) if b.get("type") != "null"]
        if branches:
            field.update(branches[0])
        field.pop("default", None)
    schema["properties"] = {
        "file": {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
            "description": "the data: a .csv, .npz or .zip (image_zip) file",
        },
        **schema["properties"],
    }
    schema["required"] = ["file"]
    schema["title"] = "DatasetUpload"
    schema["description"] = "The data in `file`; every other field is optional."
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
