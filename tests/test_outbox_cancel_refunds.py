"""A cancelled group buy of 5,000 paid participants is refunded in full, once per buyer, while
wallet-service answers one of payment-service's credit chunks 409 `idempotency_in_progress`:
the outbox retries that chunk (it is not dead-lettered, nor dropped) until the wallet takes it.

The paid participants are written straight into the services' tables, as
`bench/close_session.py` does (5,000 real joins would take far longer than what is tested);
the catalog, the session and the cancel go through the API as an admin's would. The wallet
really answers "in progress": a claim of the key payment-service will use for that chunk (scope:
its token's subject; key: `refund-credits:<outbox row id>`; the fingerprint of the very body it
will send) is written into wallet's idempotency store, as a concurrent request of its own would
have, while the wallet's claims wait behind a table lock so the real request cannot get there
first. The claim is removed once the row has been retried.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from laku.core.idempotency import request_fingerprint
from laku.testing.catalog import create_seed_catalog
from laku.testing.database import plain_url
from laku.testing.platform import Platform, bearer
from laku.wallet.client import BulkCreditsCreate, MovementCreate, MovementReason
from tests.group_buys import open_group_buy
from tests.support import eventually_async

PARTICIPANTS = 5_000
ADJUSTMENTS = {"S": 0, "M": 5000, "L": 10000}  # laku.testing.catalog's seed variants
UNIT_PRICE = 95_000  # the first of the seed's tiers (laku.testing.catalog.TIERS)
CREDITS_PATH = "/api/wallets/credits/bulk"
PAYMENT_SERVICE_SCOPE = "service:payment"  # the subject of payment-service's service token
OUTBOX_SCHEMAS = ("group_buying", "payment", "wallet", "warehouse", "notification")


async def _insert_paid_participants(
    db: asyncpg.Connection, session_id: uuid.UUID, variants: dict[str, str]
) -> dict[uuid.UUID, int]:
    """Test setup, straight into the tables: PARTICIPANTS buyers who joined (1 to 3 units)
    and paid, with their payments held in escrow and their stock reserved. Returns what each
    buyer paid."""
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    participants, payments, reservations, movements = [], [], [], []
    reserved: dict[uuid.UUID, int] = {}
    paid: dict[uuid.UUID, int] = {}
    sizes = list(ADJUSTMENTS)
    for n in range(PARTICIPANTS):
        size = sizes[n % len(sizes)]
        variant_id = uuid.UUID(variants[size])
        quantity = 1 + n % 3
        price = UNIT_PRICE + ADJUSTMENTS[size]
        total = price * quantity
        participant_id, payment_id, user_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        reference = f"participant:{participant_id}"
        url = f"http://xendit.invalid/web/{tag}-{n}"
        participants.append(
            (
                participant_id,
                session_id,
                user_id,
                variant_id,
                quantity,
                price,
                total,
                "paid",
                reference,
                payment_id,
                url,
                now,
                now,
                now,
            )
        )
        payments.append(
            (
                payment_id,
                f"PAY-{tag}-{n:05d}",
                reference,
                user_id,
                total,
                "IDR",
                "test join",
                "paid",
                "held",
                f"invoice-{tag}-{n}",
                url,
                now + timedelta(hours=1),
                now,
                0,
                now,
                now,
            )
        )
        reservations.append(
            (
                uuid.uuid4(),
                reference,
                f"session:{session_id}",
                variant_id,
                quantity,
                "reserved",
                now,
                now,
            )
        )
        movements.append((variant_id, "reserve", 0, quantity, reference, now))
        reserved[variant_id] = reserved.get(variant_id, 0) + quantity
        paid[user_id] = total

    async with db.transaction():
        await db.copy_records_to_table(
            "group_participants",
            schema_name="group_buying",
            records=participants,
            columns=[
                "id",
                "session_id",
                "user_id",
                "variant_id",
                "quantity",
                "unit_price",
                "total_price",
                "status",
                "reservation_reference",
                "payment_id",
                "payment_url",
                "paid_at",
                "created_at",
                "updated_at",
            ],
        )
        await db.execute(
            "UPDATE group_buying.group_buying_sessions SET paid_quantity = $2, status = 'active' "
            "WHERE id = $1",
            session_id,
            sum(p[4] for p in participants),
        )
        await db.copy_records_to_table(
            "payments",
            schema_name="payment",
            records=payments,
            columns=[
                "id",
                "payment_code",
                "reference",
                "user_id",
                "amount",
                "currency",
                "description",
                "status",
                "escrow_status",
                "xendit_invoice_id",
                "invoice_url",
                "expires_at",
                "paid_at",
                "refunded_amount",
                "created_at",
                "updated_at",
            ],
        )
        await db.copy_records_to_table(
            "reservations",
            schema_name="warehouse",
            records=reservations,
            columns=[
                "id",
                "reference",
                "group_reference",
                "variant_id",
                "quantity",
                "status",
                "created_at",
                "updated_at",
            ],
        )
        await db.copy_records_to_table(
            "stock_movements",
            schema_name="warehouse",
            records=movements,
            columns=[
                "variant_id",
                "kind",
                "quantity_delta",
                "reserved_delta",
                "reference",
                "created_at",
            ],
        )
        await db.executemany(
            "UPDATE warehouse.warehouse_inventory "
            "SET reserved_quantity = reserved_quantity + $2 WHERE variant_id = $1",
            list(reserved.items()),
        )
    await db.execute("ANALYZE")
    return paid


async def _dead_letters(db: asyncpg.Connection) -> dict[str, int]:
    return {
        schema: await db.fetchval(
            f"SELECT count(*) FROM {schema}.outbox WHERE dead_lettered_at IS NOT NULL"
        )
        for schema in OUTBOX_SCHEMAS
    }


def _idempotency_secret(platform: Platform) -> bytes:
    secret = platform.settings.idempotency_key_secret
    assert secret is not None
    return secret.get_secret_value().encode()


async def _credit_bulk_fingerprint(
    db: asyncpg.Connection, refund_ids: list[str], secret: bytes
) -> str:
    """What wallet's idempotency store records for payment-service's credit of these refunds:
    the body ClosingDeliveries.credit_refunds sends, as httpx encodes it, keyed with the
    platform's idempotency secret."""
    refunds = await db.fetch(
        "SELECT r.id, r.amount, r.reference, p.user_id FROM payment.refunds r "
        "JOIN payment.payments p ON p.id = r.payment_id WHERE r.id = ANY($1::uuid[]) "
        "ORDER BY r.id",
        [uuid.UUID(refund_id) for refund_id in refund_ids],
    )
    body = BulkCreditsCreate(
        items=[
            MovementCreate(
                user_id=refund["user_id"],
                amount=refund["amount"],
                reason=MovementReason.SESSION_CANCELLED_REFUND,
                reference=refund["reference"],
                idempotency_key=f"refund:{refund['id']}",
            )
            for refund in refunds
        ]
    ).model_dump(mode="json", by_alias=True)
    content = httpx.Request("POST", f"http://wallet{CREDITS_PATH}", json=body).content
    request = {"method": "POST", "path": CREDITS_PATH, "query_string": b""}
    return request_fingerprint(secret, request, content)


async def test_a_cancelled_group_of_5000_is_refunded_once_each_through_a_chunk_in_progress(
    platform: Platform,
) -> None:
    stock = {size: 4_000 for size in ADJUSTMENTS}
    catalog = create_seed_catalog(platform, stock=stock, max_stock_level=8_000, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq=20_000)
    session_id = uuid.UUID(session["id"])
    db = await asyncpg.connect(plain_url(platform.database_url))
    locker = await asyncpg.connect(plain_url(platform.database_url))
    try:
        paid = await _insert_paid_participants(db, session_id, catalog.variants)
        dead_before = await _dead_letters(db)
        last_row = await db.fetchval("SELECT coalesce(max(id), 0) FROM payment.outbox")

        # wallet's idempotency claims wait until the claim below is in place.
        claim_set = locker.transaction()
        await claim_set.start()
        try:
            await locker.execute("LOCK TABLE wallet.idempotency_keys IN SHARE ROW EXCLUSIVE MODE")
            cancelled = platform.client("group-buying").post(
                f"/api/group-buying/{session_id}/cancel", headers=bearer(platform.admin_token)
            )
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["status"] == "cancelled"

            async def first_credit_row() -> Any:
                return await db.fetchrow(
                    "SELECT id, payload FROM payment.outbox "
                    "WHERE kind = 'credit_refunds' AND id > $1 ORDER BY id LIMIT 1",
                    last_row,
                )

            row = await eventually_async(
                first_credit_row, 120, every=0.2, what="the first chunk's credit row"
            )
            row_id = row["id"]
            refund_ids = json.loads(row["payload"])["refundIds"]
            key = f"refund-credits:{row_id}"
            await locker.execute(
                "INSERT INTO wallet.idempotency_keys (scope, key, fingerprint, created_at) "
                "VALUES ($1, $2, $3, clock_timestamp())",
                PAYMENT_SERVICE_SCOPE,
                key,
                await _credit_bulk_fingerprint(db, refund_ids, _idempotency_secret(platform)),
            )
        except BaseException:
            await claim_set.rollback()
            raise
        await claim_set.commit()

        async def retried_in_progress() -> Any:
            # The claim stays fresh, as a live request's would (an old one is taken over).
            await db.execute(
                "UPDATE wallet.idempotency_keys SET created_at = clock_timestamp() "
                "WHERE scope = $1 AND key = $2",
                PAYMENT_SERVICE_SCOPE,
                key,
            )
            outbox_row = await db.fetchrow(
                "SELECT attempts, last_error, delivered_at, dead_lettered_at "
                "FROM payment.outbox WHERE id = $1",
                row_id,
            )
            in_progress = "409 idempotency_in_progress" in (outbox_row["last_error"] or "")
            # `attempts` counts the attempt under way; `last_error` is the last one's that
            # ended. At 3, an attempt after the first ended "in progress" too.
            return outbox_row if outbox_row["attempts"] >= 3 and in_progress else None

        held = await eventually_async(
            retried_in_progress, 120, every=0.2, what="the chunk retried while in progress"
        )
        assert (held["delivered_at"], held["dead_lettered_at"]) == (None, None)
        credited_meanwhile = await db.fetchval(
            "SELECT count(*) FROM wallet.wallet_transactions WHERE idempotency_key = ANY($1)",
            [f"refund:{refund_id}" for refund_id in refund_ids],
        )
        assert credited_meanwhile == 0
        await db.execute(
            "DELETE FROM wallet.idempotency_keys WHERE scope = $1 AND key = $2 "
            "AND status_code IS NULL",
            PAYMENT_SERVICE_SCOPE,
            key,
        )

        payment_ids = await db.fetch(
            "SELECT payment_id FROM group_buying.group_participants WHERE session_id = $1",
            session_id,
        )
        our_payments = [row["payment_id"] for row in payment_ids]

        async def drained() -> bool:
            succeeded = await db.fetchval(
                "SELECT count(*) FROM payment.refunds "
                "WHERE payment_id = ANY($1) AND status = 'succeeded'",
                our_payments,
            )
            refunded = await db.fetchval(
                "SELECT count(*) FROM group_buying.group_participants "
                "WHERE session_id = $1 AND status = 'refunded'",
                session_id,
            )
            # The row is delivered once the buyers were told too, after the credit.
            delivered = await db.fetchval(
                "SELECT delivered_at IS NOT NULL FROM payment.outbox WHERE id = $1", row_id
            )
            return succeeded == PARTICIPANTS and refunded == PARTICIPANTS and delivered

        await eventually_async(drained, 240, every=0.2, what="every refund credited")

        delivered = await db.fetchrow(
            "SELECT attempts, delivered_at, dead_lettered_at FROM payment.outbox WHERE id = $1",
            row_id,
        )
        assert delivered["delivered_at"] is not None and delivered["dead_lettered_at"] is None
        assert delivered["attempts"] >= 2

        credits = await db.fetch(
            "SELECT user_id, count(*) AS credits, sum(amount) AS amount, "
            "array_agg(DISTINCT reason) AS reasons FROM wallet.wallet_transactions "
            "WHERE user_id = ANY($1) AND direction = 'credit' GROUP BY user_id",
            list(paid),
        )
        assert len(credits) == PARTICIPANTS
        assert all(credit["credits"] == 1 for credit in credits)
        assert {credit["user_id"]: credit["amount"] for credit in credits} == paid
        assert {reason for credit in credits for reason in credit["reasons"]} == {
            MovementReason.SESSION_CANCELLED_REFUND.value
        }
        refunds = await db.fetch(
            "SELECT p.user_id, count(*) AS refunds, sum(r.amount) AS amount, "
            "bool_and(r.status = 'succeeded') AS succeeded FROM payment.refunds r "
            "JOIN payment.payments p ON p.id = r.payment_id "
            "WHERE r.payment_id = ANY($1) GROUP BY p.user_id",
            our_payments,
        )
        assert {r["user_id"]: (r["refunds"], r["amount"], r["succeeded"]) for r in refunds} == {
            user_id: (1, amount, True) for user_id, amount in paid.items()
        }
        assert sum(paid.values()) == sum(credit["amount"] for credit in credits)
        assert await _dead_letters(db) == dead_before
    finally:
        await locker.close()
        await db.close()
