"""kombu's filesystem transport, with messages that appear in the queue folder whole.

The stock transport creates a message file under its final name and only then writes the
body, while a consumer moves any file with a matching name out of the folder and parses it
without taking the writer's lock. A consumer that polls between the two reads an empty
message, and the `JSONDecodeError` ends the Celery worker ("Unrecoverable error"): the
embedded service loses its worker, and the job waits forever.

Here the body is written (and flushed to disk) under a name no consumer matches, then
renamed into place, which is atomic within a folder. A file that still cannot be parsed
(one written by another program, or cut short by a crash of the machine) is logged and
dropped instead of taking the worker down with it.

Celery selects this class through `broker_transport` (see `app.queue.celery_config`); the
broker URL stays `filesystem://`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".part"  # never matches the consumer's `<name>.<queue>.msg` filter


class Channel(filesystem.Channel):
    # kombu names the body `payload` here and `message` in the abstract channel: keep the
    # filesystem channel's signature, which its `_put_fanout` calls.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # The stock name: milliseconds first, so the folder's sort order is the send order.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as file:
                file.write(dumps(payload).encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        try:
            return super()._get(queue)
        except ValueError as exc:  # a body that is not JSON: JSONDecodeError, UnicodeError
            log.error("dropped an unreadable message from queue %s: %s", queue, exc)
            raise Empty() from exc


class Transport(filesystem.Transport):
    Channel = Channel
