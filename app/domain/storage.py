"""Where datasets, checkpoints and models live: the data directory, or an object store.

Every file is named by a key, a relative POSIX path (`datasets/<id>/x.npy`,
`jobs/<id>/checkpoints/<name>`, `jobs/<id>/model-<token>.safetensors`); the database stores
keys, never absolute paths, so moving a deployment to another store only copies files
(`backprop storage migrate`). Two backends behind one small interface:

- `LocalStorage` (the default, `BACKPROP_STORAGE_URL` unset or a path): keys are files
  under the data directory, used in place. A deployment on many hosts needs that directory
  shared (NFS).
- `ObjectStorage` (`s3://bucket/prefix`, through fsspec/s3fs: AWS S3, MinIO, Ceph, R2):
  hosts share nothing but the bucket. Objects are written once under a key that is new
  (checkpoints and models carry a random token) and then recorded in the database, so an
  object is never overwritten in place and a reader never sees half of one; a host reads
  them through `LocalCache`, a size-capped copy on its own disk.

Neither holds a file in memory: uploads and downloads stream in blocks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from app.config import Settings

log = logging.getLogger(__name__)

DATASETS_PREFIX = "datasets"  # datasets/<id>/: an upload's converted arrays
JOBS_PREFIX = "jobs"  # jobs/<id>/: a job's checkpoints and model
STREAM_BLOCK_BYTES = 1 << 20  # downloads are sent, and cached copies written, in 1 MiB blocks
CACHE_DIR = "cache"  # under a host's data directory, with object storage


class StorageError(OSError):
    """A store that cannot be reached or refuses a request (its message says which)."""


class MissingObject(StorageError):
    """No file or object under the key."""


def unique_name(stem: str, suffix: str) -> str:
    """`stem-<token>suffix`: a name no earlier write used, so no object is ever replaced."""
    return f"{stem}-{secrets.token_hex(6)}{suffix}"


def check_key(key: str) -> str:
    """A key is relative and stays inside the store (no `..`, no absolute path)."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\\" in key:
        raise ValueError(f"not a storage key: {key!r}")
    return path.as_posix()


def job_prefix(job_id: str) -> str:
    return f"{JOBS_PREFIX}/{job_id}"


class Storage(Protocol):
    url: str
    in_place: bool  # keys are files on this host (`scratch(key)` is the key's own file)

    def put(self, local: Path, key: str) -> None:
        """Store the file `local` under `key` (the file is left as it is)."""

    def local_path(self, key: str) -> Path:
        """A path on this host to read `key` from (the file itself, or a cached copy)."""

    def local_tree(self, prefix: str) -> Path:
        """A folder on this host holding every file under `prefix`."""

    def open(self, key: str) -> BinaryIO:
        """`key` opened for reading, streamed (a download's body)."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The stored bytes of `key`; None when there is no such key."""

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""

    def delete_tree(self, prefix: str) -> None:
        """Remove every key under `prefix`."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under `prefix` (for migrations)."""

    def scratch(self, key: str) -> Path:
        """Where this host writes a file before `put` stores it under `key`: the key's own
        file for the data directory (so `put` is then a no-op), a local folder else."""


def put_tree(store: Storage, local: Path, prefix: str) -> None:
    """Store every file under the folder `local` under `prefix/<relative path>`."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.put(path, f"{prefix}/{path.relative_to(local).as_posix()}")


class LocalStorage:
    """Keys are files under `root` (the data directory), used in place."""

    in_place = True

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, local: Path, key: str) -> None:
        target = self._path(key)
        if local.resolve() == target.resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        shutil.copyfile(local, part)
        os.replace(part, target)

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise MissingObject(f"no file {key!r} in the data directory")
        return path

    def local_tree(self, prefix: str) -> Path:
        return self._path(prefix)

    def open(self, key: str) -> BinaryIO:
        return self.local_path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.endswith(".part"):
                yield path.relative_to(self.root).as_posix()

    def scratch(self, key: str) -> Path:
        return self._path(key)


class ObjectStorage:
    """Keys are objects under `s3://bucket/prefix`; reads go through a `LocalCache`."""

    in_place = False

    def __init__(self, url: str, *, endpoint_url: str | None, cache: LocalCache, scratch: Path):
        self.url = url.rstrip("/")
        self.endpoint_url = endpoint_url
        self.cache = cache
        self.scratch_root = scratch
        self._fs: AbstractFileSystem | None = None
        self._fs_pid = 0

    @property
    def fs(self) -> AbstractFileSystem:
        # One client per process: s3fs runs its own event loop thread, which a fork (Celery's
        # pool, the training processes) does not carry over.
        if self._fs is None or self._fs_pid != os.getpid():
            import s3fs

            options = {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}
            self._fs = s3fs.S3FileSystem(skip_instance_cache=True, client_kwargs=options)
            self._fs_pid = os.getpid()
        return self._fs

    def _remote(self, key: str) -> str:
        return f"{self.url.removeprefix('s3://')}/{check_key(key)}"

    def put(self, local: Path, key: str) -> None:
        try:
            self.fs.put_file(str(local), self._remote(key))  # multipart, from disk
        except (OSError, ValueError) as exc:  # botocore's errors surface as OSError here
            raise StorageError(f"could not store {key!r} in {self.url}: {exc}") from exc

    def local_path(self, key: str) -> Path:
        return self.cache.get(key, self._fetch)

    def local_tree(self, prefix: str) -> Path:
        fetched: list[Path] = []
        for key in self.keys(prefix):
            fetched.append(self.cache.get(key, self._fetch, keep=fetched))
        return self.cache.path(prefix)

    def _fetch(self, key: str, target: Path) -> None:
        try:
            self.fs.get_file(self._remote(key), str(target))
        except FileNotFoundError as exc:
            raise MissingObject(f"no object {key!r} in the bucket") from exc
        except (OSError, ValueError) as exc:
            raise StorageError(f"could not read {key!r} from {self.url}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        try:
            handle: BinaryIO = self.fs.open(self._remote(key), "rb", block_size=STREAM_BLOCK_BYTES)
        except FileNotFoundError as exc:
            raise MissingObject(f"no object {key!r} in the bucket") from exc
        return handle

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._remote(key)))

    def size(self, key: str) -> int | None:
        try:
            return int(self.fs.info(self._remote(key))["size"])
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._remote(key))
        self.cache.forget(key)

    def delete_tree(self, prefix: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._remote(prefix), recursive=True)
        self.cache.forget(prefix)

    def keys(self, prefix: str = "") -> Iterator[str]:
        root = self.url.removeprefix("s3://")
        base = self._remote(prefix) if prefix else root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return
        for remote in sorted(found):
            yield remote.removeprefix(root + "/")

    def scratch(self, key: str) -> Path:
        path = self.scratch_root / check_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class LocalCache:
    """Copies of stored objects on this host's disk, at most `max_bytes` in all.

    Objects never change under a key, so a copy never goes stale; the least recently used
    copies are deleted when a new one would pass the cap. A copy is fetched to a `.part`
    file and renamed, so a reader (another process of this host) sees all of it or none.
    """

    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str, fetch: Fetch, keep: Collection[Path] = ()) -> Path:
        """The cached copy of `key`, fetched first if missing; eviction spares it and
        `keep` (the other files of a folder being fetched)."""
        path = self.path(key)
        if path.is_file():
            # Recently used: evicted last. The access time only: the modification time
            # stays the object's (predictors are cached by it).
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per fetch: two threads may fetch the same key at once.
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        part = Path(name)
        try:
            fetch(key, part)
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        self.evict(keep={path, *keep})
        return path

    def forget(self, key: str) -> None:
        path = self.path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def evict(self, keep: Collection[Path] = ()) -> None:
        """Delete the least recently used copies until the cache fits its cap (never those
        in `keep`: a cap smaller than what is in use is exceeded rather than broken)."""
        with self._lock:
            files = []
            for path in self.root.rglob("*"):
                if path.is_file() and not path.name.endswith(".part"):
                    stat = path.stat()
                    files.append((stat.st_atime, stat.st_size, path))
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files, key=lambda item: item[0]):
                if total <= self.max_bytes:
                    break
                if path in keep:
                    continue
                path.unlink(missing_ok=True)
                total -= size
                log.info("cache: evicted %s (%d bytes)", path, size)


class Fetch(Protocol):
    def __call__(self, key: str, target: Path) -> None: ...


_stores: dict[tuple[str, str | None, str], Storage] = {}
_stores_lock = threading.Lock()


def storage_for(settings: Settings) -> Storage:
    """The store `settings` name (one per process and configuration)."""
    url = settings.storage_url or str(settings.data_dir)
    key = (url, settings.s3_endpoint_url, str(settings.data_dir))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _make(settings, url)
            _stores[key] = store
        return store


def _make(settings: Settings, url: str) -> Storage:
    if url.startswith("s3://"):
        cache = LocalCache(settings.data_dir / CACHE_DIR, settings.storage_cache_bytes)
        return ObjectStorage(
            url,
            endpoint_url=settings.s3_endpoint_url,
            cache=cache,
            scratch=settings.data_dir / "scratch",
        )
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"BACKPROP_STORAGE_URL {url!r}: give a local path or s3://bucket/prefix")
    return LocalStorage(Path(url.removeprefix("file://")))
