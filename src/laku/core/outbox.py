"""Transactional outbox: work that must reach another system is written in the same transaction
as the change that causes it, then delivered by a relay that retries until it succeeds.

Rows are leased (their `next_attempt_at` pushed forward) before delivery, so several processes
may relay one table without delivering a row twice at once; handlers are still idempotent
(they pass `outbox:<id>` as the idempotency key) because a lease can expire mid-delivery.

A kind whose handler is `Batched` gets every row of that kind leased together in one call (many
small notices become one request); the rows then succeed or are retried together.
"""

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.tracing import carrier, continuing

Handler = Callable[[int, dict[str, Any]], Awaitable[None]]
"""Delivers one outbox row: (row id, payload). Raising means: try again later."""

Row = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Batched:
    """Delivers all leased rows of its kind at once: [(row id, payload), ...], oldest first.
    Raising means: try them all again later."""

    deliver: Callable[[Sequence[Row]], Awaitable[None]]


log = structlog.get_logger()


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("kind", String(64), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column(
            "next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()
        ),
        Column("delivered_at", DateTime(timezone=True), nullable=True),
        Column("last_error", Text, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        # W3C trace context of what enqueued the row: its delivery continues that trace.
        Column("trace_context", JSONB, nullable=True),
        Index(
            "ix_outbox_pending",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL"),
        ),
    )


async def enqueue(session: AsyncSession, table: Table, kind: str, payload: dict[str, Any]) -> int:
    """Add work to the outbox inside the caller's transaction; returns the row id."""
    return (
        await session.execute(
            table.insert()
            .values(kind=kind, payload=payload, trace_context=carrier() or None)
            .returning(table.c.id)
        )
    ).scalar_one()


class OutboxRelay:
    """Delivers pending rows with exponential back-off (1 s, 2 s, 4 s ... `max_backoff`)."""

    def __init__(
        self,
        db: Database,
        table: Table,
        handlers: Mapping[str, Handler | Batched],
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 50,
        lease: timedelta = timedelta(seconds=30),
        max_backoff: timedelta = timedelta(minutes=5),
    ):
        self._db = db
        self._table = table
        self._handlers = handlers
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._lease = lease
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Deliver now rather than at the next poll (call after committing new rows)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._table.fullname}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                delivered = await self.deliver_due()
            except Exception:
                log.exception("outbox_relay_failed", table=self._table.fullname)
                delivered = 0
            if delivered < self._batch_size:  # a full batch means more may be waiting
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
                self._wake.clear()

    async def deliver_due(self) -> int:
        """Lease and deliver the rows that are due; returns how many were attempted."""
        t = self._table
        async with self._db.sessions.begin() as session:
            due = (
                select(t.c.id)
                .where(t.c.delivered_at.is_(None), t.c.next_attempt_at <= func.now())
                .order_by(t.c.next_attempt_at)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = (
                await session.execute(
                    update(t)
                    .where(t.c.id.in_(due.scalar_subquery()))
                    .values(next_attempt_at=func.now() + self._lease, attempts=t.c.attempts + 1)
                    .returning(t.c.id, t.c.kind, t.c.payload, t.c.attempts, t.c.trace_context)
                )
            ).all()
        by_kind: dict[str, list[Any]] = defaultdict(list)
        for row in sorted(rows, key=lambda row: row.id):
            by_kind[row.kind].append(row)
        deliveries = []
        for kind, rows_of_kind in by_kind.items():
            if isinstance(self._handlers.get(kind), Batched):
                deliveries.append(self._deliver(kind, rows_of_kind))
            else:
                deliveries += [self._deliver(kind, [row]) for row in rows_of_kind]
        await asyncio.gather(*deliveries)
        return len(rows)

    async def _deliver(self, kind: str, rows: Sequence[Any]) -> None:
        """Deliver `rows` of one kind (one row, or a Batched kind's rows) and record how it went
        on each of them."""
        t = self._table
        ids = [row.id for row in rows]
        try:
            handler = self._handlers[kind]
            with continuing(f"outbox {kind}", [row.trace_context for row in rows]):
                await self._call(handler, rows)
        except Exception as exc:
            attempts = max(row.attempts for row in rows)
            backoff = min(timedelta(seconds=2 ** (attempts - 1)), self._max_backoff)
            log.warning(
                "outbox_delivery_failed", kind=kind, ids=ids, attempts=attempts, error=repr(exc)
            )
            values: dict[str, Any] = {
                "next_attempt_at": func.now() + backoff,
                "last_error": repr(exc)[:2000],
            }
        else:
            values = {"delivered_at": func.now(), "last_error": None}
        async with self._db.sessions.begin() as session:
            await session.execute(update(t).where(t.c.id.in_(ids)).values(**values))

    @staticmethod
    async def _call(handler: Handler | Batched, rows: Sequence[Any]) -> None:
        if isinstance(handler, Batched):
            await handler.deliver([(row.id, row.payload) for row in rows])
        else:
            [row] = rows
            await handler(row.id, row.payload)
