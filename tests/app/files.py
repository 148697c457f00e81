"""Upload bodies for API tests, built in memory."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

BOUNDARY = "backprop-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

IRIS_CSV = (
    b"sepal_length,sepal_width,species\n"
    b"5.1,3.5,setosa\n"
    b"7.0,3.2,versicolor\n"
    b"4.9,3.0,setosa\n"
    b"6.4,3.2,versicolor\n"
)
RAGGED_CSV = b"a,b,label\n1,2,x\n3,y\n5,6,z\n"  # line 3 has 2 fields


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def png_bytes(size: tuple[int, int], value: int) -> bytes:
    """A greyscale PNG of `size` (width, height) filled with `value`."""
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def image_zip_bytes() -> bytes:
    """cat/ holds two 4×3 PNGs, dog/ one 6×5 PNG."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat/a.png", png_bytes((4, 3), 0))
        archive.writestr("cat/b.png", png_bytes((4, 3), 255))
        archive.writestr("dog/c.png", png_bytes((6, 5), 51))
    return buffer.getvalue()


def multipart_head(filename: str, fields: dict[str, str] | None = None) -> bytes:
    """Everything of a multipart body before the file's bytes (fields first)."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (fields or {}).items()
    ]
    parts.append(
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
        f'name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return "".join(parts).encode()


MULTIPART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def streamed_upload(filename: str, total_bytes: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A multipart body sent in chunks, its file `total_bytes` of CSV-ish digits."""
    yield multipart_head(filename)
    sent = 0
    while sent < total_bytes:
        size = min(chunk, total_bytes - sent)
        yield b"1" * size
        sent += size
    yield MULTIPART_TAIL


def leftovers(data_dir: Path) -> list[Path]:
    """Files and folders an upload may leave: temporary uploads and dataset folders."""
    return sorted(
        path
        for folder in (data_dir / ".uploads", data_dir / "datasets")
        if folder.exists()
        for path in folder.iterdir()
    )
