"""A short-lived cache of public reads (open group buys, the catalog) shared by every visitor:
the home and group-buy pages stay fast under many shoppers while staying at most seconds old."""

import time
from collections.abc import Awaitable, Callable
from typing import Any


class PublicCache:
    def __init__(self, max_entries: int = 2_000):
        self._entries: dict[tuple, tuple[float, Any]] = {}
        self._max_entries = max_entries

    async def get(self, key: tuple, ttl_seconds: float, load: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        value = await load()
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (now + ttl_seconds, value)
        return value
