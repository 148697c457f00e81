"""The per-key request rate limit (`BACKPROP_RATE_LIMIT`, API.md "Quotas and limits").

A moving window of one second per key digest, kept by the `limits` library in this API
process: with `backprop api --workers N` a key may make up to N times the limit in all.
"""

from __future__ import annotations

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class RateLimiter:
    """`allow(digest)`: whether a key may make one more request now (always, without a
    limit)."""

    def __init__(self, per_second: int | None):
        self.per_second = per_second
        self._item = RateLimitItemPerSecond(per_second) if per_second else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage()) if per_second else None

    def allow(self, digest: str) -> bool:
        if self._item is None or self._limiter is None:
            return True
        return self._limiter.hit(self._item, digest)
