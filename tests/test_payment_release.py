"""payment-service's side of settlements: escrow released to a group buy's factory (recorded on
each payment), what was released to a factory in a period, and a cancelled order's refund,
which alone may take money back after the escrow was released."""

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from laku.testing.platform import Account, Platform, bearer
from tests.payments import (
    REFUNDS,
    RELEASE,
    Payment,
    paid_payment,
    payment_by_id,
    post_payments,
    post_refunds,
    refund_item,
    refunds_made,
    refunds_settled,
)
from tests.support import assert_problem, balance, wallet_transactions

RELEASED = "/api/payments/escrow/released"


@pytest.fixture(scope="module")
def service_headers(platform: Platform) -> dict[str, str]:
    """As group-buying's closer and settlement-service call: with a `service` token."""
    return platform.service_headers("group-buying")


def _release(
    platform: Platform,
    headers: dict[str, str],
    payments: list[Payment],
    factory_id: str,
    group_session_id: str,
) -> dict[str, Any]:
    response = post_payments(
        platform,
        RELEASE,
        {
            "paymentIds": [p["id"] for p in payments],
            "factoryId": factory_id,
            "groupSessionId": group_session_id,
        },
        headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _settlement(platform: Platform) -> dict[str, str]:
    """Settlement-service is the one that reads what was released."""
    return platform.service_headers("settlement")


def _released(
    platform: Platform, headers: dict[str, str], factory_id: str, start: datetime, end: datetime
) -> httpx.Response:
    return platform.client("payment").get(
        RELEASED,
        params={"factoryId": factory_id, "from": start.isoformat(), "to": end.isoformat()},
        headers=headers,
    )


def _released_ok(
    platform: Platform, headers: dict[str, str], factory_id: str, start: datetime, end: datetime
) -> dict[str, Any]:
    response = _released(platform, headers, factory_id, start, end)
    assert response.status_code == 200, response.text
    return response.json()


def _released_at(platform: Platform, headers: dict[str, str], payment: Payment) -> datetime:
    return datetime.fromisoformat(
        payment_by_id(platform, headers, payment["id"])["escrowReleasedAt"]
    )


def _ids() -> tuple[str, str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())


def test_release_records_factory_and_group_and_sums_by_period(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    factory, other_factory, _ = _ids()
    first_group, second_group, other_group = _ids()
    whole = paid_payment(platform, service_headers, buyer.id, 475_000)
    partly = paid_payment(platform, service_headers, buyer.id, 475_000)
    second = paid_payment(platform, service_headers, buyer.id, 300_000)
    elsewhere = paid_payment(platform, service_headers, buyer.id, 200_000)
    refunds_made(platform, service_headers, refund_item(partly, 150_000))

    released = _release(platform, service_headers, [whole, partly], factory, first_group)
    assert released == {"released": 2, "alreadyReleased": 0, "amount": 475_000 + 325_000}
    _release(platform, service_headers, [second], factory, second_group)
    _release(platform, service_headers, [elsewhere], other_factory, other_group)
    rows = platform.sql(
        "SELECT id::text, released_to_factory_id::text AS factory, group_session_id::text AS grp "
        "FROM payment.payments WHERE id = ANY($1::uuid[])",
        [uuid.UUID(p["id"]) for p in (whole, partly, second, elsewhere)],
    )
    assert {row["id"]: (row["factory"], row["grp"]) for row in rows} == {
        whole["id"]: (factory, first_group),
        partly["id"]: (factory, first_group),
        second["id"]: (factory, second_group),
        elsewhere["id"]: (other_factory, other_group),
    }
    # Released again (a closer's re-run) to another factory: the first release stands.
    again = _release(platform, service_headers, [whole], other_factory, other_group)
    assert again == {"released": 0, "alreadyReleased": 1, "amount": 0}

    times = [_released_at(platform, service_headers, p) for p in (whole, partly, second)]
    start, end = min(times), max(times) + timedelta(microseconds=1)
    summary = _released_ok(platform, _settlement(platform), factory, start, end)
    assert summary["factoryId"] == factory
    assert datetime.fromisoformat(summary["from"]) == start
    assert datetime.fromisoformat(summary["to"]) == end
    assert (summary["totalAmount"], summary["payments"]) == (475_000 + 325_000 + 300_000, 3)
    assert summary["sessions"] == sorted(
        [
            {"groupSessionId": first_group, "amount": 800_000, "payments": 2},
            {"groupSessionId": second_group, "amount": 300_000, "payments": 1},
        ],
        key=lambda s: s["groupSessionId"],
    )
    # [from, to): a payment released exactly at `to` belongs to the next period.
    last = max(times)
    before_last = _released_ok(platform, _settlement(platform), factory, start, last)
    assert before_last["totalAmount"] == sum(
        amount for amount, at in zip((475_000, 325_000, 300_000), times, strict=True) if at < last
    )
    from_last = _released_ok(platform, _settlement(platform), factory, last, end)
    assert from_last["totalAmount"] == 1_100_000 - before_last["totalAmount"]
    earlier = _released_ok(
        platform, _settlement(platform), factory, start - timedelta(days=30), start
    )
    assert earlier == {
        "factoryId": factory,
        "from": earlier["from"],
        "to": earlier["to"],
        "totalAmount": 0,
        "payments": 0,
        "sessions": [],
        "cancelledOrderRefunds": [],
    }
    theirs = _released_ok(
        platform, _settlement(platform), other_factory, start, end + timedelta(days=1)
    )
    assert (theirs["totalAmount"], theirs["sessions"]) == (
        200_000,
        [{"groupSessionId": other_group, "amount": 200_000, "payments": 1}],
    )


def test_released_summary_is_for_admins_and_services(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    start = datetime.fromisoformat("2025-11-01T00:00:00+00:00")
    end = datetime.fromisoformat("2025-12-01T00:00:00+00:00")
    factory = str(uuid.uuid4())
    assert_problem(_released(platform, {}, factory, start, end), 401)
    assert_problem(_released(platform, buyer.headers, factory, start, end), 403)
    admin = bearer(platform.admin_token)
    assert _released_ok(platform, admin, factory, start, end)["totalAmount"] == 0
    assert_problem(_released(platform, admin, factory, end, start), 422, "invalid_period")
    assert_problem(_released(platform, admin, factory, start, start), 422, "invalid_period")
    no_factory = platform.client("payment").get(
        RELEASED, params={"from": start.isoformat(), "to": end.isoformat()}, headers=admin
    )
    assert_problem(no_factory, 422, "invalid_input")
    naive = platform.client("payment").get(
        RELEASED,
        params={"factoryId": factory, "from": "2025-11-01T00:00:00", "to": end.isoformat()},
        headers=admin,
    )
    assert_problem(naive, 422, "invalid_input")


# Refunds after the release ----------------------------------------------------------------------


def _cancelled_order_refund(payment: Payment, amount: int) -> dict[str, Any]:
    return refund_item(
        payment, amount, "order_cancelled", reference=f"order:{uuid.uuid4()}:cancelled"
    )


def _state(platform: Platform, headers: dict[str, str], payment: Payment, buyer: Account) -> Any:
    """The payment and the buyer's wallet: what a refused refund must leave as it was."""
    return (
        payment_by_id(platform, headers, payment["id"]),
        wallet_transactions(platform, buyer),
        platform.sql(
            "SELECT reference, amount, reason, status FROM payment.refunds WHERE payment_id = $1 "
            "ORDER BY reference",
            uuid.UUID(payment["id"]),
        ),
    )


def test_a_cancelled_order_is_refunded_after_the_release(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    """Paid 475,000, 150,000 back as a tier refund at the close, the rest (the order's
    subtotal, 325,000) released to the factory; the order is then cancelled: its subtotal goes
    back into the buyer's wallet, and the factory's released total shrinks by as much."""
    buyer = platform.new_buyer()
    factory, group, _ = _ids()
    payment = paid_payment(platform, service_headers, buyer.id, 475_000)
    tier = refund_item(payment, 150_000)
    refunds_made(platform, service_headers, tier)
    _release(platform, service_headers, [payment], factory, group)
    released_at = _released_at(platform, service_headers, payment)
    period = (released_at, released_at + timedelta(seconds=1))
    assert _released_ok(platform, _settlement(platform), factory, *period)["totalAmount"] == 325_000
    refunds_settled(platform, [tier["reference"]])

    # Released escrow is the factory's for every other reason, and the amount is capped.
    before = _state(platform, service_headers, payment, buyer)
    for reason in ("tier_refund", "group_failed", "group_cancelled"):
        assert_problem(
            post_refunds(platform, service_headers, refund_item(payment, 1_000, reason)),
            409,
            "payment_not_refundable",
        )
    mixed = post_refunds(
        platform,
        service_headers,
        _cancelled_order_refund(payment, 1_000),
        refund_item(payment, 1_000, "tier_refund"),
    )
    assert_problem(mixed, 409, "payment_not_refundable")
    assert_problem(
        post_refunds(platform, service_headers, _cancelled_order_refund(payment, 325_001)),
        409,
        "refund_exceeds_payment",
    )
    assert _state(platform, service_headers, payment, buyer) == before

    cancelled = _cancelled_order_refund(payment, 325_000)
    assert refunds_made(platform, service_headers, cancelled) == {
        "refunded": 1,
        "alreadyRefunded": 0,
        "amount": 325_000,
    }
    refunded = payment_by_id(platform, service_headers, payment["id"])
    assert (refunded["status"], refunded["escrowStatus"], refunded["refundedAmount"]) == (
        "refunded",
        "refunded",
        475_000,
    )
    # When (and to whom) it was released stays on record, and the release is not repeated.
    assert datetime.fromisoformat(refunded["escrowReleasedAt"]) == released_at
    again = _release(platform, service_headers, [payment], factory, group)
    assert again == {"released": 0, "alreadyReleased": 1, "amount": 0}
    summary = _released_ok(platform, _settlement(platform), factory, *period)
    assert (summary["totalAmount"], summary["payments"]) == (0, 1)

    refunds_settled(platform, [cancelled["reference"]])
    assert balance(platform, buyer) == 475_000
    [credit] = [t for t in wallet_transactions(platform, buyer) if t["amount"] == 325_000]
    assert (credit["direction"], credit["reason"], credit["reference"]) == (
        "credit",
        "order_cancelled_refund",
        cancelled["reference"],
    )
    # Nothing is left to give back.
    assert_problem(
        post_refunds(platform, service_headers, _cancelled_order_refund(payment, 1)),
        409,
        "payment_not_refundable",
    )


def test_a_cancelled_order_is_refunded_in_part_or_while_escrow_is_held(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    factory, group, _ = _ids()
    released = paid_payment(platform, service_headers, buyer.id, 400_000)
    _release(platform, service_headers, [released], factory, group)
    part = _cancelled_order_refund(released, 100_000)
    refunds_made(platform, service_headers, part)
    after = payment_by_id(platform, service_headers, released["id"])
    assert (after["status"], after["escrowStatus"], after["refundedAmount"]) == (
        "paid",
        "released",
        100_000,
    )
    at = _released_at(platform, service_headers, released)
    summary = _released_ok(platform, _settlement(platform), factory, at, at + timedelta(seconds=1))
    assert summary["totalAmount"] == 300_000

    # A group waiting for stock has its orders and its escrow held: an order cancelled then.
    held = paid_payment(platform, service_headers, buyer.id, 250_000)
    whole = _cancelled_order_refund(held, 250_000)
    assert refunds_made(platform, service_headers, whole)["amount"] == 250_000
    gone = payment_by_id(platform, service_headers, held["id"])
    assert (gone["status"], gone["escrowStatus"], gone["escrowReleasedAt"]) == (
        "refunded",
        "refunded",
        None,
    )
    refunds_settled(platform, [part["reference"], whole["reference"]])
    assert balance(platform, buyer) == 350_000


def test_order_cancelled_is_a_known_reason(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    unknown = refund_item({"id": str(uuid.uuid4())}, 1_000, "order_returned")
    assert_problem(post_payments(platform, REFUNDS, {"items": [unknown]}, service_headers), 422)
