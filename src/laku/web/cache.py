"""A short-lived cache of public reads (open group buys, the catalog) shared by every visitor:
the home and group-buy pages stay fast under many shoppers while staying at most seconds old.
Once an entry is older than its TTL, the next visitor loads it again while the visitors arriving
meanwhile are served the previous answer: one call to the services per key and TTL, never an
answer older than the TTL plus one load."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class PublicCache:
    def __init__(self, max_entries: int = 2_000):
        self._entries: dict[tuple, tuple[float, Any]] = {}
        self._loading: dict[tuple, asyncio.Future] = {}
        self._max_entries = max_entries

    async def get(self, key: tuple, ttl_seconds: float, load: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        pending = self._loading.get(key)
        if pending is not None:
            return entry[1] if entry is not None else await asyncio.shield(pending)
        return await self._load(key, ttl_seconds, load)

    async def _load(self, key: tuple, ttl_seconds: float, load: Callable[[], Awaitable[Any]]):
        # One load per key at a time: the visitors arriving meanwhile wait for its answer.
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiting visitors get it, no "never retrieved" noise
            raise
        finally:
            del self._loading[key]
        future.set_result(value)
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + ttl_seconds, value)
        return value
