"""A per-process LRU of loaded, jitted models, so a model compiles once, not per request."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

from cachetools import LRUCache

from app.services.predict.predictor import Predictor


class PredictorCache:
    """At most `capacity` predictors, the least recently used dropped first.

    Keys name a model file's version (job id, path, size and mtime), so a rewritten file is
    a new entry and never serves stale parameters. Thread-safe: predictions run in worker
    threads. Two threads missing the same key at once may both load it; one result is kept.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: LRUCache[Hashable, Predictor] = LRUCache(capacity)
        self._lock = threading.Lock()  # an LRUCache is not thread-safe; even a read reorders it

    def get_or_load(self, key: Hashable, load: Callable[[], Predictor]) -> Predictor:
        """The cached predictor for `key`, else `load()` (outside the lock), cached."""
        with self._lock:
            predictor = self._entries.get(key)
        if predictor is not None:
            return predictor
        loaded = load()
        with self._lock:
            # The first of two concurrent loads is kept; setdefault marks it used either way.
            return self._entries.setdefault(key, loaded)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries
