"""Deleting what is kept only for a while (delivered outbox rows, old idempotency keys, a
service's own stale rows), every so often, in the background of each service process."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

import structlog

Purge = Callable[[], Awaitable[int]]
"""Deletes what has expired; returns how many rows went."""

log = structlog.get_logger()


class RetentionSweeper:
    def __init__(self, purges: Mapping[str, Purge], interval: timedelta):
        self._purges = purges
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval.total_seconds())
            await self.sweep()

    async def sweep(self) -> dict[str, int]:
        """Run every purge once; one that fails is logged and tried again next time."""
        purged = {}
        for name, purge in self._purges.items():
            try:
                purged[name] = await purge()
            except Exception:
                log.exception("retention_purge_failed", purge=name)
        if any(purged.values()):
            log.info("retention_purged", **purged)
        return purged
