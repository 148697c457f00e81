"""Opening zip archives (image_zip uploads, npz files) without trusting them.

Everything here is decided from the archive's directory before any member is
decompressed: the member count (read from the end-of-central-directory record, before
`zipfile` builds one object per member), unsafe names, symlinks, encryption, each member's
compression ratio and the total decompressed size. `zipfile` never returns more bytes
than a member's declared size, so checking declared sizes bounds the real work.
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from core.data.limits import Limits, check_limit
from core.errors import DatasetError

# Files that archiving tools add on their own; never part of a dataset.
_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
_JUNK_DIRS = {"__MACOSX"}
_DRIVE = re.compile(r"^[A-Za-z]:")
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


def open_archive(path: Path, limits: Limits, *, kind: str) -> zipfile.ZipFile:
    """Open a zip archive after checking its declared member count.

    Args:
      path: the uploaded file.
      limits: max_members is enforced here.
      kind: what the archive should be, for messages ("image_zip", "npz").
    """
    try:
        with open(path, "rb") as file:
            count = _declared_member_count(file)
        if count is not None:
            check_limit(count, limits.max_members, what="the number of members", where=kind)
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, struct.error) as exc:
        raise DatasetError(
            f"{kind}: not a readable zip archive ({exc}); the file is truncated or corrupt — "
            "create it again and upload the whole file",
            where=kind,
        ) from exc


def _declared_member_count(file: IO[bytes]) -> int | None:
    """The member count from the end-of-central-directory record, or None if absent."""
    size = file.seek(0, 2)
    # The record is 22 bytes plus a comment of at most 65535 bytes, at the very end.
    tail_start = max(0, size - (22 + 65535))
    file.seek(tail_start)
    tail = file.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) < at + 22:
        return None  # zipfile will report the archive as corrupt
    (count,) = struct.unpack_from("<H", tail, at + 10)
    locator = at - 20
    if count == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
        (zip64_offset,) = struct.unpack_from("<Q", tail, locator + 8)
        file.seek(zip64_offset)
        record = file.read(56)
        if len(record) == 56 and record[:4] == _ZIP64_EOCD:
            (count,) = struct.unpack_from("<Q", record, 32)
    return int(count)


def is_junk(name: str) -> bool:
    """OS metadata files (`__MACOSX/`, `.DS_Store`, `._*`) that uploads should ignore."""
    parts = PurePosixPath(name).parts
    return bool(parts) and (
        any(part in _JUNK_DIRS for part in parts)
        or parts[-1] in _JUNK_NAMES
        or parts[-1].startswith("._")
    )


def safe_members(
    archive: zipfile.ZipFile, limits: Limits, *, check_ratio: bool = True
) -> list[zipfile.ZipInfo]:
    """The archive's files that a dataset may use, after every safety check.

    Rejects (naming the member): absolute paths, `..` components, symlinks, encrypted
    members, a decompressed total above the limit and, with `check_ratio`, a member whose
    compression ratio is above the limit.

    Returns:
      regular file members, junk and directories left out, in archive order.
    """
    members = archive.infolist()
    check_limit(len(members), limits.max_members, what="the number of members", where="archive")
    files = []
    total = 0
    for info in members:
        _check_name(info)
        if info.is_dir() or is_junk(info.filename):
            continue
        where = f"member {info.filename!r}"
        if info.flag_bits & 0x1:
            raise DatasetError(
                f"{where} is encrypted; upload an archive without a password", where=where
            )
        if check_ratio:
            ratio = info.file_size / max(info.compress_size, 1)
            check_limit(
                round(ratio, 1),
                limits.max_compression_ratio,
                what="the compression ratio",
                where=where,
                fix="PNG and JPEG files never compress this well, so this looks like a zip "
                "bomb; re-create the archive from the original files",
            )
        total += info.file_size
        check_limit(total, limits.max_decompressed_bytes, what="the unpacked size", where=where)
        files.append(info)
    return files


def _check_name(info: zipfile.ZipInfo) -> None:
    name = info.filename
    where = f"member {name!r}"
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
        raise DatasetError(
            f"{where} has an absolute or parent ('..') path; archive members must use "
            "relative paths inside the archive",
            where=where,
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(
            f"{where} is a symbolic link; replace links with the files themselves",
            where=where,
        )


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes (at most its declared size), with corruption as a DatasetError."""
    where = f"member {info.filename!r}"
    try:
        with archive.open(info) as member:
            return member.read(info.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise DatasetError(
            f"{where} cannot be unpacked ({exc}); the archive is truncated or corrupt, or "
            "uses an unsupported compression — re-create it with standard zip (deflate)",
            where=where,
        ) from exc
