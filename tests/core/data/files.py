"""Small builders for upload files; every test writes its files under tmp_path."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def image_bytes(
    size: tuple[int, int] = (4, 3), mode: str = "L", format: str = "PNG", value: int = 128
) -> bytes:
    """An image of `size` (width, height) filled with `value`, encoded as `format`."""
    image = Image.new(mode, size, value if mode in ("L", "P") else (value,) * len(mode))
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def write_zip(
    path: Path,
    members: dict[str, bytes],
    *,
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def two_class_zip(path: Path) -> Path:
    """cat/ holds two 4×3 grey PNGs, dog/ one 6×5 grey PNG (resized to 4×3)."""
    return write_zip(
        path,
        {
            "cat/a.png": image_bytes(value=0),
            "cat/b.png": image_bytes(value=255),
            "dog/c.png": image_bytes(size=(6, 5), value=51),
        },
    )


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path
