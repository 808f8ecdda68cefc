"""order-service: an order's lifecycle after its group buy succeeded.

    processing -> shipped -> delivered
    processing -> cancelled -> refunded (the subtotal back into the buyer's wallet)

The orders are real: buyers join and pay through the Xendit sandbox and the session is closed by
process-expired, so the orders' escrow has been released when they ship or are cancelled.
"""

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Account, Platform
from tests.group_buys import (
    close_group_buy,
    end_now,
    join_group_buy,
    open_group_buy,
    wallet_credits,
)
from tests.support import admin_headers, assert_problem, balance, eventually, snapshot

ORDERS = "/api/orders"


@dataclass(frozen=True)
class Order:
    buyer: Account
    id: str
    subtotal: int
    payment_id: str


@pytest.fixture(scope="module")
def orders(platform: Platform) -> list[Order]:
    """Four buyers' orders of one successful group buy, all `processing`."""
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq=4)
    joined = [
        join_group_buy(platform, session, catalog.variants["S"], 1, pay=True) for _ in range(4)
    ]
    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "success"
    page = platform.client("order").get(
        ORDERS, params={"sessionId": session["id"]}, headers=admin_headers(platform)
    )
    by_user = {order["userId"]: order for order in page.json()["items"]}
    made = [by_user[j.buyer.id] for j in joined]
    assert {order["status"] for order in made} == {"processing"}
    return [
        Order(j.buyer, order["id"], order["subtotal"], order["paymentId"])
        for j, order in zip(joined, made, strict=True)
    ]


def _order(platform: Platform, order_id: str) -> dict[str, Any]:
    response = platform.client("order").get(f"{ORDERS}/{order_id}", headers=admin_headers(platform))
    assert response.status_code == 200, response.text
    return response.json()


def _ship(
    platform: Platform, order_id: str, tracking: str = "WB-0001", **headers: str
) -> httpx.Response:
    return platform.client("order").post(
        f"{ORDERS}/{order_id}/ship",
        json={"trackingNumber": tracking, "courier": "jne"},
        headers=headers or admin_headers(platform),
    )


def _deliver(platform: Platform, order_id: str, **headers: str) -> httpx.Response:
    return platform.client("order").post(
        f"{ORDERS}/{order_id}/deliver", headers=headers or admin_headers(platform)
    )


def _cancel(platform: Platform, order_id: str, **headers: str) -> httpx.Response:
    return platform.client("order").post(
        f"{ORDERS}/{order_id}/cancel",
        json={"reason": "Buyer asked before shipping"},
        headers=headers or admin_headers(platform),
    )


def test_shipped_then_delivered(platform: Platform, orders: list[Order]) -> None:
    order = orders[0]
    shipped = _ship(platform, order.id, tracking="WB-SHIP-1")
    assert shipped.status_code == 200, shipped.text
    body = shipped.json()
    assert (body["status"], body["trackingNumber"], body["courier"]) == (
        "shipped",
        "WB-SHIP-1",
        "jne",
    )
    assert body["shippedAt"] is not None and body["deliveredAt"] is None

    # The same report again (a webhook delivered twice) answers the order as it is.
    again = _ship(platform, order.id, tracking="WB-SHIP-1")
    assert again.status_code == 200 and again.json() == body

    # Another waybill for a shipped order is refused, nothing changed.
    before = snapshot(platform, "order")
    assert_problem(_ship(platform, order.id, tracking="WB-OTHER"), 409, "invalid_order_transition")
    assert snapshot(platform, "order") == before

    delivered = _deliver(platform, order.id)
    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["status"] == "delivered"
    assert delivered.json()["deliveredAt"] is not None
    assert _deliver(platform, order.id).json() == delivered.json()

    # The buyer was told of each move once, however often it was reported (and, at the close,
    # that the goods were in hand).
    def told() -> list[str]:
        inbox = platform.client("notification").get(
            "/api/notifications/me", params={"limit": 100}, headers=order.buyer.headers
        )
        return sorted(n["text"] for n in inbox.json()["items"] if "Order" in n["subject"])

    assert eventually(lambda: len(told()) == 3), told()
    number = body["orderNumber"]
    assert told() == [
        f"The goods of your order {number} (Premium T-Shirt (Small) x 1) are in our warehouse; "
        "the courier is being booked.",
        f"Your order {number} (Premium T-Shirt (Small) x 1) has been delivered. "
        "Terima kasih for buying with Laku!",
        f"Your order {number} (Premium T-Shirt (Small) x 1) is on its way with JNE, "
        "tracking number WB-SHIP-1.",
    ]

    # A delivered order is neither cancelled nor shipped again.
    before = snapshot(platform, "order")
    assert_problem(_cancel(platform, order.id), 409, "invalid_order_transition")
    assert_problem(_ship(platform, order.id, tracking="WB-NEW"), 409, "invalid_order_transition")
    assert snapshot(platform, "order") == before


def test_delivering_before_shipping_is_refused(platform: Platform, orders: list[Order]) -> None:
    order = orders[1]
    before = snapshot(platform, "order")
    assert_problem(_deliver(platform, order.id), 409, "invalid_order_transition")
    assert snapshot(platform, "order") == before
    assert _order(platform, order.id)["status"] == "processing"


def test_cancelled_order_is_refunded_and_cannot_ship(
    platform: Platform, orders: list[Order]
) -> None:
    order = orders[2]
    balance_before = balance(platform, order.buyer)
    cancelled = _cancel(platform, order.id)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] in ("cancelled", "refunded")
    assert cancelled.json()["cancelReason"] == "Buyer asked before shipping"

    refunded = eventually(lambda: _order(platform, order.id)["status"] == "refunded")
    assert refunded, _order(platform, order.id)
    assert eventually(lambda: balance(platform, order.buyer) == balance_before + order.subtotal)
    credits = [
        c for c in wallet_credits(platform, order.buyer) if c["reference"].startswith("order:")
    ]
    assert [(c["amount"], c["reason"], c["reference"]) for c in credits] == [
        (order.subtotal, "order_cancelled_refund", f"order:{order.id}:cancelled")
    ]

    # Cancelling again answers the order as it is; nothing is refunded twice.
    assert _cancel(platform, order.id).json()["status"] == "refunded"
    [payment] = platform.sql(
        "SELECT amount, refunded_amount, status FROM payment.payments WHERE id = $1",
        uuid.UUID(order.payment_id),
    )
    assert payment["refunded_amount"] == payment["amount"]  # tier refund + this order's subtotal
    assert payment["status"] == "refunded"

    # Shipping or delivering a cancelled order is refused, nothing changed.
    before = snapshot(platform, "order")
    assert_problem(_ship(platform, order.id), 409, "invalid_order_transition")
    assert_problem(_deliver(platform, order.id), 409, "invalid_order_transition")
    assert snapshot(platform, "order") == before


def test_a_shipped_order_cannot_be_cancelled(platform: Platform, orders: list[Order]) -> None:
    order = orders[3]
    assert _ship(platform, order.id, tracking="WB-SHIP-4").status_code == 200
    before = snapshot(platform, "order", "payment")
    assert_problem(_cancel(platform, order.id), 409, "invalid_order_transition")
    assert snapshot(platform, "order", "payment") == before


def test_only_the_platform_moves_orders(platform: Platform, orders: list[Order]) -> None:
    order = orders[1]
    before = snapshot(platform, "order")
    buyer = order.buyer.headers
    assert_problem(_ship(platform, order.id, **buyer), 403)
    assert_problem(_deliver(platform, order.id, **buyer), 403)
    assert_problem(_cancel(platform, order.id, **buyer), 403)
    assert_problem(platform.client("order").post(f"{ORDERS}/{order.id}/deliver"), 401)
    assert_problem(_ship(platform, str(uuid.uuid4())), 404, "order_not_found")
    bad = platform.client("order").post(
        f"{ORDERS}/{order.id}/ship", json={"trackingNumber": ""}, headers=admin_headers(platform)
    )
    assert_problem(bad, 422)
    assert snapshot(platform, "order") == before
