"""Money moved while a service is down or a message comes late (design 15): a close whose
refunds cannot reach wallet-service, and a payment that lands after its join was cancelled.
Real processes are stopped and started; nothing is mocked."""

import os
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Platform, bearer
from tests.group_buys import (
    close_group_buy,
    end_now,
    invoice_of,
    join_group_buy,
    open_group_buy,
    participants_of,
    payment_of,
    wallet_credits,
)
from tests.support import balance, eventually, ok, outbox_marks, outboxes_done


def _refund_rows(platform: Platform, payment_ids: list[str]) -> list[dict]:
    rows = platform.sql(
        "SELECT id, payment_id, amount, status, reason FROM payment.refunds "
        "WHERE payment_id = ANY($1::uuid[])",
        [uuid.UUID(p) for p in payment_ids],
    )
    return [dict(row) for row in rows]


def _told(platform: Platform, user_id: str, key: str) -> Counter[str]:
    rows = platform.sql(
        "SELECT channel FROM notification.notifications WHERE user_id = $1 AND key = $2",
        uuid.UUID(user_id),
        key,
    )
    return Counter(row["channel"] for row in rows)


def test_a_close_while_wallet_is_down_credits_every_refund_once_after_it_returns(
    platform: Platform,
) -> None:
    marks = outbox_marks(platform)
    catalog = create_seed_catalog(
        platform, stock={"S": 20}, max_stock_level=40, reorder_threshold=0
    )
    session = open_group_buy(platform, catalog, target_moq=6)
    small = catalog.variants["S"]
    paid = [
        join_group_buy(platform, session, small, 2, pay=True) for _ in range(3)
    ]  # tiers 25, 25, 50
    end_now(platform, session["id"])

    supervisor = platform.supervisor
    supervisor.stop("wallet")
    try:
        closed = close_group_buy(platform, session["id"])
        assert closed["status"] == "success"
        refunds = _refund_rows(platform, [j.payment_id for j in paid])
        assert sorted(r["amount"] for r in refunds) == [40000, 60000, 60000]
        time.sleep(2)  # the relay tries (and fails) to reach the wallet meanwhile
        assert {r["status"] for r in _refund_rows(platform, [j.payment_id for j in paid])} == {
            "pending"
        }
    finally:
        supervisor.start_one("wallet")
        supervisor.wait_ready()

    def all_succeeded() -> bool:
        rows = _refund_rows(platform, [j.payment_id for j in paid])
        return {r["status"] for r in rows} == {"succeeded"}

    assert eventually(all_succeeded, timeout=60)
    for joined, amount in zip(paid, [60000, 60000, 40000], strict=True):
        assert balance(platform, joined.buyer) == amount
        assert [c["amount"] for c in wallet_credits(platform, joined.buyer)] == [amount]
        [refund] = _refund_rows(platform, [joined.payment_id])
        key = f"refund:{refund['id']}"
        assert eventually(lambda k=key, j=joined: _told(platform, j.buyer.id, k)["email"] == 1)
    # everything queued has run: a second credit or notice would be here
    outboxes_done(platform, marks)
    for joined in paid:
        assert len(wallet_credits(platform, joined.buyer)) == 1
        [refund] = _refund_rows(platform, [joined.payment_id])
        assert _told(platform, joined.buyer.id, f"refund:{refund['id']}") == Counter(
            {"in_app": 1, "email": 1}
        )


def test_a_payment_after_its_join_was_cancelled_is_refunded_in_full_and_never_released(
    platform: Platform,
) -> None:
    """The buyer pays while payment-service is frozen (SIGSTOP) and the admin cancels the
    session meanwhile: whichever reaches payment-service first, the money goes back to the
    wallet whole, once, and the factory is never credited with it."""
    marks = outbox_marks(platform)
    catalog = create_seed_catalog(platform, stock={"S": 8}, reorder_threshold=0)
    period_start = datetime.now(UTC) - timedelta(seconds=1)
    session = open_group_buy(platform, catalog, target_moq=4)
    late = join_group_buy(platform, session, catalog.variants["S"], 2, pay=False)
    invoice = invoice_of(platform, late)
    payment_process = platform.supervisor.processes["payment"].process
    assert payment_process is not None

    os.kill(payment_process.pid, signal.SIGSTOP)
    try:
        cancelled = platform.client("group-buying").post(
            f"/api/group-buying/{session['id']}/cancel", headers=bearer(platform.admin_token)
        )
        assert cancelled.status_code == 200, cancelled.text
        assert participants_of(platform, session["id"])[late.id]["status"] == "cancelled"
        paid = platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice['id']}/pay")
        assert paid.status_code == 200, paid.text
    finally:
        os.kill(payment_process.pid, signal.SIGCONT)

    total = late.participant["totalPrice"]
    assert eventually(lambda: balance(platform, late.buyer) == total, timeout=60)
    assert eventually(
        lambda: participants_of(platform, session["id"])[late.id]["status"] == "refunded"
    )
    payment = payment_of(platform, late)
    assert (payment["status"], payment["escrowStatus"]) == ("refunded", "refunded")
    [refund] = _refund_rows(platform, [late.payment_id])
    assert (refund["amount"], refund["reason"], refund["status"]) == (
        total,
        "group_cancelled",
        "succeeded",
    )
    assert eventually(lambda: _told(platform, late.buyer.id, f"refund:{refund['id']}")["email"])
    outboxes_done(platform, marks)  # everything queued has run: a second credit would be here
    assert [c["amount"] for c in wallet_credits(platform, late.buyer)] == [total]
    assert platform.sql(
        "SELECT escrow_released_at FROM payment.payments WHERE id = $1",
        uuid.UUID(late.payment_id),
    ) == [(None,)]
    preview = ok(
        platform.client("settlement").get(
            "/api/settlements/preview",
            params={
                "factoryId": catalog.factory_id,
                "periodStart": period_start.isoformat(),
                "periodEnd": datetime.now(UTC).isoformat(),
            },
            headers=bearer(platform.admin_token),
        )
    )
    assert (preview["totalAmount"], preview["payments"]) == (0, 0)


@pytest.fixture(autouse=True)
def _every_service_running(platform: Platform):
    """A test that stopped or froze a service leaves it running for the next."""
    yield
    for entry in platform.supervisor.processes.values():
        if entry.process is not None and entry.process.poll() is None:
            os.kill(entry.process.pid, signal.SIGCONT)
