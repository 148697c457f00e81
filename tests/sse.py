"""A small Server-Sent Events reader for tests (what a client of the events API does)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: Any  # the parsed JSON; for comments, the comment's text


def events(response: httpx.Response, *, comments: bool = False) -> Iterator[Event]:
    """The events of a streaming response, as they arrive; ends when the server closes.

    With `comments`, comment lines (`: keep-alive`) come as events named ":".
    """
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                yield Event(
                    fields.get("id"), fields.get("event", "message"), json.loads("\n".join(data))
                )
            fields, data = {}, []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if not name:
            if comments:
                yield Event(None, ":", value)
        elif name == "data":
            data.append(value)
        else:
            fields[name] = value
