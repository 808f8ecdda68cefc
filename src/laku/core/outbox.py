"""Transactional outbox: work that must reach another system is written in the same transaction
as the change that causes it, then delivered by a relay that retries until it succeeds or is
refused for good.

Rows are leased (their `next_attempt_at` pushed forward) before delivery, so several processes
may relay one table without delivering a row twice at once; handlers are still idempotent
(they pass `outbox:<id>` as the idempotency key) because a lease can expire mid-delivery.

A kind whose handler is `Batched` gets every row of that kind leased together in one call (many
small notices become one request); the rows then succeed or are retried together.

How a failed delivery goes on is one rule, the relay's: a final refusal (`FinalRefusal`, or a
`ServiceCallError` that `is_retryable` says is the callee's final word) dead-letters the row
with its reason, kept for an admin to read and requeue and never retried by itself; anything
else (an outage, a timeout, a 5xx, a 429, work still in progress at the callee) is retried
with capped exponential back-off. Nothing is dropped.
"""

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    and_,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.http import ServiceCallError, is_retryable
from laku.core.tracing import carrier, continuing

Handler = Callable[[int, dict[str, Any]], Awaitable[None]]
"""Delivers one outbox row: (row id, payload). Returning means done. Raising `RetryLater` (or
failing unexpectedly) means: try again later, with backoff. Raising `FinalRefusal`, or a
callee's refusal its contract makes final, means: never retried, dead-lettered for an admin
(see `final_refusal_reason`)."""

Row = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Batched:
    """Delivers all leased rows of its kind at once: [(row id, payload), ...], oldest first.
    Raising means: try them all again later."""

    deliver: Callable[[Sequence[Row]], Awaitable[None]]


class RetryLater(Exception):
    """Raised by a handler when the work cannot be done yet (what it waits for is not there):
    the row stays pending and is tried again after a backoff."""


class FinalRefusal(Exception):
    """Raised by a handler when the work can never be done as asked (its callee's contract
    makes the refusal final, or what it names is gone): the row is dead-lettered with
    `reason` for an admin, rather than retried or dropped."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def final_refusal_reason(exc: BaseException) -> str | None:
    """Why the delivery that raised `exc` is refused for good, or None when it may be retried."""
    if isinstance(exc, FinalRefusal):
        return exc.reason
    if isinstance(exc, ServiceCallError) and not is_retryable(exc):
        return _described(exc)
    return None


def _described(exc: BaseException) -> str:
    """A failure as kept in `last_error`: a refusal with its status and problem code."""
    if isinstance(exc, ServiceCallError):
        return f"{exc.status} {exc.code}: {exc.detail or exc.title}"
    return repr(exc)


# 2**20 s is 12 days: past any sensible `max_backoff`, and a number that stays small.
_MAX_BACKOFF_EXPONENT = 20


def backoff_delay(attempts: int, max_backoff: timedelta) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s ... up to `max_backoff`.
    The exponent is capped first, so however many attempts a row has had (a payout followed
    for days) no huge number is built and nothing overflows."""
    exponent = min(max(attempts - 1, 0), _MAX_BACKOFF_EXPONENT)
    return min(timedelta(seconds=2**exponent), max_backoff)


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
        # Refused for good: never retried by itself; an admin reads the reason and may requeue.
        Column("dead_lettered_at", DateTime(timezone=True), nullable=True),
        Column("dead_letter_reason", Text, nullable=True),
        # W3C trace context of what enqueued the row: its delivery continues that trace.
        Column("trace_context", JSONB, nullable=True),
        Index(
            "ix_outbox_pending",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL AND dead_lettered_at IS NULL"),
        ),
        Index(
            "ix_outbox_dead_letters",
            "dead_lettered_at",
            postgresql_where=text("dead_lettered_at IS NOT NULL"),
        ),
    )


def _pending(table: Table) -> Any:
    return and_(table.c.delivered_at.is_(None), table.c.dead_lettered_at.is_(None))


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
    """Delivers pending rows with exponential back-off (1 s, 2 s, 4 s ... `max_backoff`) and
    dead-letters those refused for good."""

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
                .where(_pending(t), t.c.next_attempt_at <= func.now())
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
            reason = final_refusal_reason(exc)
            if reason is not None and len(rows) > 1:
                # One row's content may be what was refused: each is delivered on its own, so
                # only the rows refused alone are dead-lettered.
                for row in rows:
                    await self._deliver(kind, [row])
                return
            attempts = max(row.attempts for row in rows)
            error = _described(exc)
            if reason is not None:
                log.error(
                    "outbox_dead_lettered", kind=kind, ids=ids, attempts=attempts, reason=reason
                )
                values: dict[str, Any] = {
                    "dead_lettered_at": func.now(),
                    "dead_letter_reason": reason[:2000],
                    "last_error": error[:2000],
                }
            else:
                log.warning(
                    "outbox_delivery_failed", kind=kind, ids=ids, attempts=attempts, error=error
                )
                values = {
                    "next_attempt_at": func.now() + backoff_delay(attempts, self._max_backoff),
                    "last_error": error[:2000],
                }
            # A row another process delivered meanwhile (its lease ran out) stays delivered.
            where = [t.c.id.in_(ids), t.c.delivered_at.is_(None)]
        else:
            # Delivered wins over a dead letter recorded meanwhile by an expired lease's delivery.
            values = {
                "delivered_at": func.now(),
                "last_error": None,
                "dead_lettered_at": None,
                "dead_letter_reason": None,
            }
            where = [t.c.id.in_(ids)]
        async with self._db.sessions.begin() as session:
            await session.execute(update(t).where(*where).values(**values))

    @staticmethod
    async def _call(handler: Handler | Batched, rows: Sequence[Any]) -> None:
        if isinstance(handler, Batched):
            await handler.deliver([(row.id, row.payload) for row in rows])
        else:
            [row] = rows
            await handler(row.id, row.payload)


# For admins: what is waiting, what was refused, and requeuing it ---------------------------


@dataclass(frozen=True)
class OutboxSummary:
    pending: int
    oldest_pending_age_seconds: float | None
    dead_letters_by_kind: dict[str, int]


async def summarize(session: AsyncSession, table: Table) -> OutboxSummary:
    t = table
    pending = (
        await session.execute(
            select(
                func.count(),
                func.extract("epoch", func.now() - func.min(t.c.created_at)),
            ).where(_pending(t))
        )
    ).one()
    dead = await session.execute(
        select(t.c.kind, func.count())
        .where(t.c.dead_lettered_at.is_not(None))
        .group_by(t.c.kind)
        .order_by(t.c.kind)
    )
    age = pending[1]
    return OutboxSummary(
        pending=pending[0],
        oldest_pending_age_seconds=None if age is None else float(age),
        dead_letters_by_kind={kind: count for kind, count in dead.all()},
    )


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    dead_lettered_at: datetime | None
    dead_letter_reason: str | None
    last_error: str | None


def _entry_columns(table: Table) -> list[Any]:
    return [getattr(table.c, name) for name in OutboxEntry.__dataclass_fields__]


async def dead_letters(
    session: AsyncSession, table: Table, *, kind: str | None, limit: int, offset: int
) -> tuple[list[OutboxEntry], int]:
    """Dead letters, newest first, and how many there are (of `kind`, if given)."""
    t = table
    where = [t.c.dead_lettered_at.is_not(None)]
    if kind is not None:
        where.append(t.c.kind == kind)
    total = (await session.execute(select(func.count()).where(*where))).scalar_one()
    rows = await session.execute(
        select(*_entry_columns(t))
        .where(*where)
        .order_by(t.c.dead_lettered_at.desc(), t.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [OutboxEntry(**row._mapping) for row in rows], total


async def requeue(session: AsyncSession, table: Table, row_id: int) -> OutboxEntry | None:
    """Put a dead letter back in line, due now (its attempts and last error kept); a row that
    is not dead-lettered (requeued already, or delivered) is answered as it is. None: no such
    row. Commits."""
    t = table
    row = (
        await session.execute(
            update(t)
            .where(t.c.id == row_id, t.c.dead_lettered_at.is_not(None))
            .values(dead_lettered_at=None, dead_letter_reason=None, next_attempt_at=func.now())
            .returning(*_entry_columns(t))
        )
    ).first()
    if row is None:
        row = (await session.execute(select(*_entry_columns(t)).where(t.c.id == row_id))).first()
    else:
        log.info("outbox_requeued", kind=row.kind, id=row_id)
    await session.commit()
    return None if row is None else OutboxEntry(**row._mapping)


# Retention ---------------------------------------------------------------------------------

PURGE_BATCH = 5_000


async def purge_delivered(db: Database, table: Table, older_than: timedelta) -> int:
    """Delete rows delivered more than `older_than` ago, in batches (short transactions);
    pending and dead-lettered rows are kept whatever their age. Returns how many went."""
    t = table
    purged = 0
    while True:
        async with db.sessions.begin() as session:
            batch = (
                select(t.c.id)
                .where(t.c.delivered_at < func.now() - older_than)
                .limit(PURGE_BATCH)
                .scalar_subquery()
            )
            deleted = (await session.execute(delete(t).where(t.c.id.in_(batch)))).rowcount
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged
