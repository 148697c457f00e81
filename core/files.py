"""Durable file writes: a reader, or a restart after a crash, sees the old file or the new
one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Have `write` fill a temporary file beside `path`, fsync it, rename it over `path`,
    and fsync the directory so the rename itself survives a crash. Returns the path.

    On any failure (a full disk among them) the temporary file is removed and `path` is
    left as it was; an `OSError` that names no file is raised again naming `path`.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            flush_to_disk(file)
        os.replace(tmp, final)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(final)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(final.parent)
    return final


def flush_to_disk(file: IO[Any]) -> None:
    file.flush()
    os.fsync(file.fileno())


def fsync_directory(path: Path) -> None:
    """Make the entries of `path` (a rename into it, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
