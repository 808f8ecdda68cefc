"""Work sent to another service in batches: chunks of what the callee accepts, a few of them
in flight at once, and a digest naming a batch's contents in its idempotency key (the same
batch again, a re-run after a crash, gets the first call's answer)."""

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TypeVar

Item = TypeVar("Item")


def chunks(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def digest(names: Iterable[str]) -> str:
    """Names a batch by what it holds, in the order given."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:32]


async def together(*steps: Awaitable[object]) -> None:
    """Run `steps` at once; the first to fail cancels the others and is raised as it is (so
    each step must be safe to repeat: a cancelled one is done again by the next run)."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def in_flight(calls: Iterable[Callable[[], Awaitable[object]]], limit: int) -> None:
    """Make every call, `limit` at a time, as `together` does."""
    slots = asyncio.Semaphore(limit)

    async def make(call: Callable[[], Awaitable[object]]) -> None:
        async with slots:
            await call()

    await together(*(make(call) for call in calls))
