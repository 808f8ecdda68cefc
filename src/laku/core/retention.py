"""Deleting what is kept only for a while (delivered outbox rows, old idempotency keys, a
service's own stale rows), every so often, in the background of each service process."""

import asyncio
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

    async def run(self) -> None:
        """Sweep every interval until cancelled (the service runs it in its background work)."""
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
