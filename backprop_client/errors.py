"""`BackpropError`: what the server (or the network) said no with, ready to show a user."""

from __future__ import annotations

from typing import Any

import httpx

# What a user can do about a status, appended to the server's own message.
HINTS = {
    401: "pass --api-key, set BACKPROP_API_KEY, or run where `backprop serve` keeps its data "
    "directory (its api_key file)",
}


class BackpropError(Exception):
    """An error answer of the API (`status` and its `detail`), or `status` None when the
    server could not be reached."""

    def __init__(self, status: int | None, detail: Any, *, url: str = ""):
        self.status = status
        self.detail = detail
        self.url = url
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f" ({self.url})" if self.url else ""
        head = f"HTTP {self.status}{where}" if self.status is not None else f"no answer{where}"
        text = f"{head}: {format_detail(self.detail)}"
        hint = HINTS.get(self.status or 0)
        return f"{text}; {hint}" if hint else text

    @classmethod
    def from_response(cls, response: httpx.Response) -> BackpropError:
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail", body) if isinstance(body, dict) else None
        if detail is None:
            detail = response.text.strip() or response.reason_phrase
        return cls(response.status_code, detail, url=str(response.request.url))

    @classmethod
    def unreachable(cls, url: str, error: Exception) -> BackpropError:
        return cls(
            None,
            f"cannot reach the server: {error or type(error).__name__}; is `backprop serve` "
            "running? (the URL comes from --url, BACKPROP_URL or the data directory)",
            url=url,
        )


def format_detail(detail: Any) -> str:
    """A 422's list of `{"loc", "msg"}` as `body.model.layers.2: msg` lines; else as is."""
    if isinstance(detail, list) and all(isinstance(item, dict) for item in detail):
        return "; ".join(_located(item) for item in detail)
    return str(detail)


def _located(item: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in item.get("loc", []))
    message = str(item.get("msg", item))
    return f"{loc}: {message}" if loc else message


def raise_for_status(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        response.read()  # a streamed answer's body is not loaded yet
        raise BackpropError.from_response(response)
    return response
