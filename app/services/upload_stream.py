"""Receive a multipart/form-data upload as a stream, cut off the moment it is too large.

Starlette's `request.form()` spools the whole body before a handler sees it; here the
body is parsed chunk by chunk with python-multipart's streaming parser. The `file` part
goes straight to a temporary file under the data directory (hashed and counted on the
way), the other fields are kept in memory up to a small cap, and nothing ever holds more
than one slice of the body. The temporary file is deleted when the context exits.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from app.domain.errors import InvalidInput, MalformedRequest, UnsupportedMediaType
from core.errors import DatasetError, ErrorItem

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024  # all form fields but `file`, together
MAX_PARTS = 32
# Boundaries and part headers on top of the file and the fields: generous, still small.
FRAMING_BYTES = 64 * 1024
SLICE_BYTES = 64 * 1024  # the parser is fed at most this much at a time


@dataclass(frozen=True)
class ReceivedUpload:
    """An upload on disk: the `file` part's bytes, and the other form fields."""

    path: Path
    filename: str | None
    size_bytes: int
    sha256: str
    fields: dict[str, str]


def file_too_large(limit: int) -> DatasetError:
    return DatasetError(
        f"the file is larger than this service's upload limit of {limit:,} bytes; split the "
        "data or upload a smaller sample",
        kind="too_large",
    )


@asynccontextmanager
async def receive_upload(
    headers: Mapping[str, str],
    body: AsyncGenerator[bytes, None],
    *,
    directory: Path,
    max_file_bytes: int,
    too_large: Callable[[int], Exception] = file_too_large,
) -> AsyncIterator[ReceivedUpload]:
    """Stream a multipart body to a temporary file in `directory`, deleted on exit.

    Raises:
      UnsupportedMediaType: the body is not multipart/form-data.
      MalformedRequest: the multipart framing is broken.
      DatasetError: kind too_large (413) as soon as the file passes `max_file_bytes` (or
        what `too_large(max_file_bytes)` makes, when the cap is another limit's), or
        at once when Content-Length says the body will.
      InvalidInput: no `file` part, two of them, or a field that is not UTF-8 (or too long).
    """
    boundary = _boundary(headers.get("content-type"))
    body_limit = max_file_bytes + MAX_FIELD_BYTES + FRAMING_BYTES
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise too_large(max_file_bytes)
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=directory)
    path = Path(name)
    try:
        async with aclosing(body):
            with os.fdopen(fd, "wb") as file:
                form = _FormSink(file, max_file_bytes, too_large)
                parser = MultipartParser(boundary, form.callbacks())
                received = 0
                async for chunk in body:
                    received += len(chunk)
                    if received > body_limit:
                        raise too_large(max_file_bytes)
                    if chunk:
                        await anyio.to_thread.run_sync(_feed, parser, chunk)
        yield form.result(path)
    finally:
        path.unlink(missing_ok=True)


def _boundary(content_type: str | None) -> bytes:
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        error = ErrorItem(
            ("header", "content-type"),
            "send the upload as multipart/form-data with the data in a 'file' part "
            "(curl -F file=@data.csv)",
            "unsupported_media_type",
        )
        raise UnsupportedMediaType(error.msg, errors=[error])
    if not options.get(b"boundary"):
        raise _malformed("the Content-Type header has no boundary")
    return options[b"boundary"]


def _feed(parser: MultipartParser, chunk: bytes) -> None:
    try:
        for start in range(0, len(chunk), SLICE_BYTES):
            parser.write(chunk[start : start + SLICE_BYTES])
    except MultipartParseError as exc:
        raise _malformed(str(exc)) from exc


def _malformed(reason: str) -> MalformedRequest:
    return MalformedRequest(f"the multipart body is malformed: {reason}")


def _field_error(field: str, msg: str, type: str) -> InvalidInput:
    return InvalidInput.of([ErrorItem(("body", field), msg, type)])


class _FormSink:
    """python-multipart callbacks: the file part to disk, other fields to memory."""

    def __init__(self, file: BinaryIO, max_file_bytes: int, too_large: Callable[[int], Exception]):
        self._file = file
        self._max_file_bytes = max_file_bytes
        self._too_large = too_large
        self._digest = hashlib.sha256()
        self._size = 0
        self._filename: str | None = None
        self._has_file = False
        self._fields: dict[str, str] = {}
        self._field_bytes = 0
        self._parts = 0
        self._finished = False
        self._header = bytearray()
        self._value = bytearray()
        self._disposition = b""
        self._name = ""
        self._kind = "skip"  # this part is the "file", a "field", or "skip" (another file)
        self._data = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def result(self, path: Path) -> ReceivedUpload:
        if not self._finished:
            raise _malformed("the body ended before the closing boundary")
        if not self._has_file:
            raise _field_error(FILE_FIELD, "Field required", "missing")
        return ReceivedUpload(
            path=path,
            filename=self._filename,
            size_bytes=self._size,
            sha256=self._digest.hexdigest(),
            fields=self._fields,
        )

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise _malformed(f"more than {MAX_PARTS} parts")
        self._disposition = b""
        self._data.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header.strip().lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._header.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition.decode("latin-1"))
        if b"name" not in options:
            raise _malformed("a part has no Content-Disposition name")
        self._name = options[b"name"].decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self._name == FILE_FIELD:
            if self._has_file:
                raise _field_error(FILE_FIELD, "send one file per upload", "too_many_files")
            self._has_file = True
            self._kind = "file"
            self._filename = filename.decode("utf-8", "replace") if filename else None
        else:
            self._kind = "skip" if filename is not None else "field"

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            self._size += end - start
            if self._size > self._max_file_bytes:
                raise self._too_large(self._max_file_bytes)
            piece = data[start:end]
            self._digest.update(piece)
            self._file.write(piece)
        elif self._kind == "field":
            self._field_bytes += end - start
            if self._field_bytes > MAX_FIELD_BYTES:
                raise _field_error(
                    self._name, f"form fields may hold {MAX_FIELD_BYTES:,} bytes", "too_long"
                )
            self._data += data[start:end]

    def _on_part_end(self) -> None:
        if self._kind != "field":
            return
        try:
            self._fields[self._name] = self._data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _field_error(self._name, "the value is not UTF-8 text", "unicode") from exc

    def _on_end(self) -> None:
        self._finished = True
