"""A short-lived cache of public reads (open group buys, the catalog) shared by every visitor:
the home and group-buy pages stay fast under many shoppers while staying at most seconds old.
Once an entry is older than its TTL, the next visitor still gets it while one refresh runs in
the background, so no visitor waits on the services for what everyone reads."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger()


class PublicCache:
    def __init__(self, max_entries: int = 2_000):
        self._entries: dict[tuple, tuple[float, Any]] = {}
        self._loading: dict[tuple, asyncio.Future] = {}
        self._max_entries = max_entries

    async def get(self, key: tuple, ttl_seconds: float, load: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] <= time.monotonic() and key not in self._loading:
                task = asyncio.create_task(self._load(key, ttl_seconds, load))
                task.add_done_callback(_log_failure)
            return entry[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
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


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("public_cache_refresh_failed", error=repr(task.exception()))
