"""The outbox relay on a real database: rows delivered one by one, or a `Batched` kind's rows in
one call, and failures retried later with every row of the attempt kept."""

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import MetaData, select, text

from laku.core.db import Database, async_url
from laku.core.outbox import Batched, OutboxRelay, Row, enqueue, outbox_table


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[tuple[Database, Any]]:
    schema = f"outbox_test_{uuid.uuid4().hex[:8]}"
    table = outbox_table(MetaData(schema=schema))
    db = Database(async_url(database_url), pool_size=2)
    async with db.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(table.metadata.create_all)
    try:
        yield db, table
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await db.dispose()


async def _enqueue(db: Database, table: Any, *rows: tuple[str, dict[str, Any]]) -> None:
    async with db.sessions.begin() as session:
        for kind, payload in rows:
            await enqueue(session, table, kind, payload)


async def _state(db: Database, table: Any) -> dict[int, tuple[str, bool, int]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(table.c.id, table.c.kind, table.c.delivered_at.is_not(None), table.c.attempts)
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows}


async def test_a_batched_kind_is_delivered_in_one_call(outbox: tuple[Database, Any]) -> None:
    db, table = outbox
    single: list[tuple[int, dict[str, Any]]] = []
    batches: list[Sequence[Row]] = []

    async def one(row_id: int, payload: dict[str, Any]) -> None:
        single.append((row_id, payload))

    async def many(rows: Sequence[Row]) -> None:
        batches.append(list(rows))

    await _enqueue(
        db,
        table,
        ("notice", {"n": 1}),
        ("email", {"n": 2}),
        ("notice", {"n": 3}),
        ("notice", {"n": 4}),
    )
    relay = OutboxRelay(db, table, {"email": one, "notice": Batched(many)})
    assert await relay.deliver_due() == 4

    assert [payload for _, payload in single] == [{"n": 2}]
    [batch] = batches
    assert [payload for _, payload in batch] == [{"n": 1}, {"n": 3}, {"n": 4}]
    assert [row_id for row_id, _ in batch] == sorted(row_id for row_id, _ in batch)
    assert all(delivered for _, delivered, _ in (await _state(db, table)).values())
    assert await relay.deliver_due() == 0  # nothing is delivered twice


async def test_a_failed_batch_is_retried_whole_later(outbox: tuple[Database, Any]) -> None:
    db, table = outbox
    calls: list[int] = []

    async def failing(rows: Sequence[Row]) -> None:
        calls.append(len(rows))
        raise RuntimeError("notification-service is down")

    await _enqueue(db, table, ("notice", {"n": 1}), ("notice", {"n": 2}), ("unknown", {}))
    relay = OutboxRelay(db, table, {"notice": Batched(failing)})
    assert await relay.deliver_due() == 3
    assert calls == [2]
    state = await _state(db, table)
    # Nothing delivered, each row's attempt counted, and none due again before its back-off.
    assert sorted(state.values()) == [
        ("notice", False, 1),
        ("notice", False, 1),
        ("unknown", False, 1),
    ]
    assert await relay.deliver_due() == 0

    async with db.sessions.begin() as session:
        await session.execute(table.update().values(next_attempt_at=text("now()")))
    delivered: list[int] = []

    async def working(rows: Sequence[Row]) -> None:
        delivered.extend(row_id for row_id, _ in rows)

    relay = OutboxRelay(db, table, {"notice": Batched(working)})
    assert await relay.deliver_due() == 3
    assert len(delivered) == 2
    state = await _state(db, table)
    assert sorted(state.values()) == [
        ("notice", True, 2),
        ("notice", True, 2),
        ("unknown", False, 2),  # no handler: kept, and tried again later
    ]
