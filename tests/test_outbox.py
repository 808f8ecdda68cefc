"""The outbox relay on a real database: rows delivered one by one, or a `Batched` kind's rows in
one call; failures retried later with every row of the attempt kept, with a back-off that is
capped; final refusals dead-lettered with their reason, listed, and requeued; delivered rows
and old idempotency keys purged after their retention."""

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, func, select, text

from laku.core import outbox as outbox_module
from laku.core.db import Database, async_url
from laku.core.errors import UpstreamUnavailable
from laku.core.http import ServiceCallError, is_retryable
from laku.core.idempotency import idempotency_table, purge_expired_keys
from laku.core.outbox import (
    Batched,
    FinalRefusal,
    OutboxRelay,
    Row,
    backoff_delay,
    enqueue,
    outbox_table,
    purge_delivered,
)


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[tuple[Database, Any]]:
    schema = f"outbox_test_{uuid.uuid4().hex[:8]}"
    metadata = MetaData(schema=schema)
    table = outbox_table(metadata)
    idempotency_table(metadata)
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


def _refusal(status: int, code: str) -> ServiceCallError:
    return ServiceCallError(status, {"code": code, "detail": f"{code} detail"})


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (409, "idempotency_in_progress", True),
        (409, "payment_in_progress", True),
        (409, "shipment_in_progress", True),
        (429, "too_many_requests", True),
        (500, "internal_error", True),
        (503, "upstream_unavailable", True),
        (401, "invalid_token", True),
        (409, "payment_not_refundable", False),
        (409, "idempotency_key_reused", False),
        (422, "idempotency_key_reused", False),
        (422, "invalid_input", False),
        (404, "payment_not_found", False),
        (403, "forbidden", False),
    ],
)
def test_which_refusals_are_retryable(status: int, code: str, retryable: bool) -> None:
    assert is_retryable(_refusal(status, code)) is retryable


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 1), (1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (48, 300), (100, 300), (10_000, 300)],
)
def test_back_off_doubles_up_to_its_cap_and_never_overflows(attempts: int, seconds: int) -> None:
    # 2**47 seconds (attempt 48) is past what a timedelta holds: the exponent is capped first.
    assert backoff_delay(attempts, timedelta(minutes=5)) == timedelta(seconds=seconds)
    # A cap beyond any real wait: the exponent's own cap keeps the number small.
    assert backoff_delay(attempts, timedelta(days=10_000)) == timedelta(
        seconds=2 ** min(max(attempts - 1, 0), 20)
    )


async def _row(db: Database, table: Any, row_id: int) -> Any:
    async with db.sessions() as session:
        return (await session.execute(select(table).where(table.c.id == row_id))).one()


async def _make_due(db: Database, table: Any) -> None:
    async with db.sessions.begin() as session:
        await session.execute(table.update().values(next_attempt_at=text("now()")))


async def test_a_row_failing_at_its_10000th_attempt_waits_the_longest_back_off(
    outbox: tuple[Database, Any],
) -> None:
    db, table = outbox
    await _enqueue(db, table, ("payout", {}))
    async with db.sessions.begin() as session:
        await session.execute(table.update().values(attempts=9_999))

    async def still_on_its_way(_: int, __: dict[str, Any]) -> None:
        raise RuntimeError("payout PENDING")

    relay = OutboxRelay(db, table, {"payout": still_on_its_way})
    assert await relay.deliver_due() == 1
    async with db.sessions() as session:
        row = (
            await session.execute(
                select(
                    table.c.attempts,
                    table.c.dead_lettered_at,
                    table.c.next_attempt_at - func.now(),
                )
            )
        ).one()
    attempts, dead_lettered_at, wait = row
    assert (attempts, dead_lettered_at) == (10_000, None)
    assert timedelta(minutes=4, seconds=55) < wait <= timedelta(minutes=5)


Failure = Callable[[], BaseException]


@pytest.mark.parametrize(
    "failure",
    [
        lambda: _refusal(409, "idempotency_in_progress"),
        lambda: _refusal(409, "payment_in_progress"),
        lambda: _refusal(429, "too_many_requests"),
        lambda: _refusal(500, "internal_error"),
        lambda: UpstreamUnavailable("POST /api/wallets/credits/bulk answered 503"),
        lambda: httpx.ReadTimeout("timed out"),
        lambda: httpx.ConnectError("connection refused"),
        lambda: RuntimeError("anything else"),
    ],
)
async def test_a_delivery_that_may_pass_later_is_retried(
    outbox: tuple[Database, Any], failure: Failure
) -> None:
    db, table = outbox
    await _enqueue(db, table, ("credit", {"n": 1}))
    calls = 0

    async def failing_once(_: int, __: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise failure()

    relay = OutboxRelay(db, table, {"credit": failing_once})
    assert await relay.deliver_due() == 1
    [row_id] = await _state(db, table)
    row = await _row(db, table, row_id)
    assert (row.delivered_at, row.dead_lettered_at, row.attempts) == (None, None, 1)
    assert row.last_error
    assert await relay.deliver_due() == 0  # waiting out its back-off

    await _make_due(db, table)
    assert await relay.deliver_due() == 1
    row = await _row(db, table, row_id)
    assert row.delivered_at is not None and row.attempts == 2 and calls == 2


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            lambda: FinalRefusal("order 1 is cancelled: cannot be marked shipped"),
            "order 1 is cancelled: cannot be marked shipped",
        ),
        (
            lambda: _refusal(409, "payment_not_refundable"),
            "409 payment_not_refundable: payment_not_refundable detail",
        ),
        (lambda: _refusal(422, "invalid_input"), "422 invalid_input: invalid_input detail"),
    ],
)
async def test_a_final_refusal_is_dead_lettered_with_its_reason_and_never_retried(
    outbox: tuple[Database, Any], failure: Failure, reason: str
) -> None:
    db, table = outbox
    await _enqueue(db, table, ("refund", {"orderId": "1"}))
    calls = 0

    async def refused(_: int, __: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise failure()

    relay = OutboxRelay(db, table, {"refund": refused})
    assert await relay.deliver_due() == 1
    [row_id] = await _state(db, table)
    row = await _row(db, table, row_id)
    assert row.dead_lettered_at is not None and row.delivered_at is None
    assert row.dead_letter_reason == reason
    await _make_due(db, table)
    assert await relay.deliver_due() == 0  # a dead letter is never due
    assert calls == 1

    async with db.sessions() as session:
        summary = await outbox_module.summarize(session, table)
        letters, total = await outbox_module.dead_letters(
            session, table, kind=None, limit=10, offset=0
        )
    assert (summary.pending, summary.dead_letters_by_kind) == (0, {"refund": 1})
    assert total == 1
    assert (letters[0].id, letters[0].payload, letters[0].attempts) == (row_id, {"orderId": "1"}, 1)
    assert letters[0].dead_letter_reason == reason


async def test_a_requeued_dead_letter_is_delivered(outbox: tuple[Database, Any]) -> None:
    db, table = outbox
    await _enqueue(db, table, ("refund", {"n": 1}))
    fixed = False

    async def refund(_: int, __: dict[str, Any]) -> None:
        if not fixed:
            raise FinalRefusal("payment not refundable")

    relay = OutboxRelay(db, table, {"refund": refund})
    await relay.deliver_due()
    [row_id] = await _state(db, table)
    fixed = True
    async with db.sessions() as session:
        requeued = await outbox_module.requeue(session, table, row_id)
    assert requeued is not None
    assert (requeued.dead_lettered_at, requeued.dead_letter_reason) == (None, None)
    async with db.sessions() as session:
        again = await outbox_module.requeue(session, table, row_id)  # answered as it is
        assert again is not None and again.attempts == 1
        assert await outbox_module.requeue(session, table, row_id + 1000) is None
        assert (await outbox_module.summarize(session, table)).pending == 1
    assert await relay.deliver_due() == 1
    row = await _row(db, table, row_id)
    assert row.delivered_at is not None and row.attempts == 2


async def test_a_batch_refused_for_good_dead_letters_only_the_rows_refused_alone(
    outbox: tuple[Database, Any],
) -> None:
    db, table = outbox
    await _enqueue(db, table, *[("notice", {"n": n}) for n in range(4)])
    calls: list[list[int]] = []

    async def notify(rows: Sequence[Row]) -> None:
        calls.append([payload["n"] for _, payload in rows])
        if any(payload["n"] == 2 for _, payload in rows):
            raise _refusal(422, "invalid_input")

    relay = OutboxRelay(db, table, {"notice": Batched(notify)})
    assert await relay.deliver_due() == 4
    assert calls == [[0, 1, 2, 3], [0], [1], [2], [3]]
    async with db.sessions() as session:
        rows = (
            await session.execute(
                select(table.c.payload["n"].as_integer(), table.c.delivered_at.is_not(None))
                .where(table.c.dead_lettered_at.is_(None))
                .order_by(table.c.id)
            )
        ).all()
    assert rows == [(0, True), (1, True), (3, True)]


async def _aged(db: Database, sql: str) -> None:
    async with db.sessions.begin() as session:
        await session.execute(text(sql))


async def test_delivered_rows_are_purged_after_their_retention_and_the_rest_kept(
    outbox: tuple[Database, Any],
) -> None:
    db, table = outbox
    await _enqueue(db, table, *[("k", {"row": name}) for name in ("old", "new", "pending", "dead")])
    t = table.fullname
    await _aged(
        db,
        f"UPDATE {t} SET created_at = now() - interval '30 days', "
        "delivered_at = CASE payload->>'row' "
        "  WHEN 'old' THEN now() - interval '8 days' WHEN 'new' THEN now() - interval '1 hour' "
        "END, "
        "dead_lettered_at = CASE WHEN payload->>'row' = 'dead' "
        "  THEN now() - interval '30 days' END",
    )
    assert await purge_delivered(db, table, timedelta(days=7)) == 1
    async with db.sessions() as session:
        kept = (await session.scalars(select(table.c.payload["row"].as_string()))).all()
    assert sorted(kept) == ["dead", "new", "pending"]
    assert await purge_delivered(db, table, timedelta(days=7)) == 0


async def test_idempotency_keys_are_purged_after_their_retention(
    outbox: tuple[Database, Any],
) -> None:
    db, table = outbox
    keys = f"{table.schema}.idempotency_keys"
    await _aged(
        db,
        f"INSERT INTO {keys} (scope, key, fingerprint, status_code, created_at) VALUES "
        "('service:payment', 'old', 'f', 200, now() - interval '25 hours'), "
        "('service:payment', 'claim', 'f', NULL, now() - interval '2 days'), "
        "('service:payment', 'new', 'f', 200, now() - interval '23 hours')",
    )
    keys_table = table.metadata.tables[keys]
    assert await purge_expired_keys(db, keys_table, timedelta(hours=24)) == 2
    async with db.sessions() as session:
        assert (await session.scalars(select(keys_table.c.key))).all() == ["new"]
