"""logistics-service over HTTP: shipping rates, shipments booked in the Biteship sandbox, and
tracking from Biteship's status webhooks moving the orders to shipped and delivered.

The orders are real: buyers join and pay through the Xendit sandbox and the group buy is closed
by process-expired, so every order starts `processing`. Couriers move in the Biteship sandbox,
whose webhooks reach logistics-service as Biteship's would.
"""

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from laku.core.http import new_http_client
from laku.logistics.client import LogisticsClient
from laku.providers.biteship.client import WEBHOOK_SECRET_HEADER
from laku.providers.biteship.sandbox import COURIERS, shipping_price
from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Account, FixedToken, Platform
from tests.group_buys import (
    close_group_buy,
    end_now,
    join_group_buy,
    open_group_buy,
    purchase_orders_of,
    session_orders,
)
from tests.service_logs import wait_logged
from tests.support import admin_headers, assert_problem, eventually, snapshot

RATES = "/api/rates"
SHIPMENTS = "/api/shipments"
WEBHOOK = "/api/shipments/webhook"
WAREHOUSE_POSTAL_CODE = "40123"
UNIT_GRAMS = 300


@dataclass(frozen=True)
class Order:
    buyer: Account
    id: str
    units: int
    address_id: str | None  # the buyer's default address


def _address(platform: Platform, buyer: Account, postal_code: str, city: str) -> dict[str, Any]:
    response = platform.client("address").post(
        "/api/addresses",
        json={
            "label": city,
            "recipientName": "Siti Aminah",
            "phone": "+6281234567890",
            "street": "Jl. Merdeka 1",
            "city": city,
            "province": "Jawa",
            "postalCode": postal_code,
            "notes": "Pagar hijau",
        },
        headers=buyer.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def orders(platform: Platform) -> list[Order]:
    """Twelve buyers' orders of one successful group buy, all `processing`: 2 units, then 1
    each. Every buyer but the fourth and the eighth has a default address, in Jakarta (12190).
    A test that books or cancels an order has one of its own, so the tests pass in any order."""
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq=7)
    joined = [
        join_group_buy(platform, session, catalog.variants[size], units, pay=True)
        for size, units in (
            *(("M", 2), ("S", 1), ("S", 1), ("L", 1), ("L", 1), ("M", 1), ("M", 1)),
            *(("S", 1), ("S", 1), ("L", 1), ("L", 1), ("S", 1)),
        )
    ]
    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "success"
    # The goods were in hand: the warehouse had the orders made ready and asked logistics to
    # book them, which booked none (no buyer had an address yet). Addresses come after that.
    assert eventually(lambda: _dispatched(platform, session["id"]))
    page = platform.client("order").get(
        "/api/orders", params={"sessionId": session["id"]}, headers=admin_headers(platform)
    )
    by_user = {order["userId"]: order for order in page.json()["items"]}
    made = []
    for index, j in enumerate(joined):
        order = by_user[j.buyer.id]
        assert order["status"] == "processing"
        assert order["readyToShipAt"] is not None
        address = None if index in (3, 7) else _address(platform, j.buyer, "12190", "Jakarta")["id"]
        made.append(Order(j.buyer, order["id"], j.participant["quantity"], address))
    return made


def _dispatched(platform: Platform, session_id: str) -> bool:
    """The warehouse's request to ship the group buy's orders has been delivered."""
    rows = platform.sql(
        "SELECT delivered_at FROM warehouse.outbox"
        " WHERE kind = 'ship_group' AND payload->>'group' = $1",
        f"session:{session_id}",
    )
    return bool(rows) and all(row["delivered_at"] is not None for row in rows)


def _rates(platform: Platform, headers: dict[str, str], **body: Any) -> httpx.Response:
    return platform.client("logistics").post(RATES, json=body, headers=headers)


def _ship(
    platform: Platform, order_id: str, courier: str = "jne", service: str = "reg", **headers: str
) -> httpx.Response:
    return platform.client("logistics").post(
        SHIPMENTS,
        json={"orderId": order_id, "courierCompany": courier, "courierType": service},
        headers=headers or admin_headers(platform),
    )


def _shipped(
    platform: Platform, order_id: str, courier: str = "jne", service: str = "reg"
) -> dict[str, Any]:
    response = _ship(platform, order_id, courier, service)
    assert response.status_code == 201, response.text
    return response.json()


def _booked(platform: Platform, order_id: str) -> dict[str, Any]:
    """The order's shipment, booked now unless it was before."""
    response = _ship(platform, order_id)
    assert response.status_code in (200, 201), response.text
    return response.json()


def _track(platform: Platform, tracking_number: str, headers: dict[str, str]) -> httpx.Response:
    return platform.client("logistics").get(f"{SHIPMENTS}/track/{tracking_number}", headers=headers)


def _order(platform: Platform, order_id: str) -> dict[str, Any]:
    response = platform.client("order").get(
        f"/api/orders/{order_id}", headers=admin_headers(platform)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _order_status(platform: Platform, order_id: str, status: str) -> dict[str, Any] | None:
    order = _order(platform, order_id)
    return order if order["status"] == status else None


def _sandbox_orders(platform: Platform, reference_id: str) -> list[dict[str, Any]]:
    orders = platform.client("biteship-sandbox").get("/sandbox/orders").json()
    return [order for order in orders if order["reference_id"] == reference_id]


def _advance(platform: Platform, biteship_order_id: str, times: int = 1) -> str:
    for _ in range(times):
        response = platform.client("biteship-sandbox").post(
            f"/sandbox/orders/{biteship_order_id}/advance"
        )
        assert response.status_code == 200, response.text
    return response.json()["status"]


def _delivered_webhooks(platform: Platform, biteship_order_id: str) -> list[dict[str, Any]]:
    attempts = platform.client("biteship-sandbox").get(
        "/sandbox/webhooks", params={"orderId": biteship_order_id}
    )
    return [attempt for attempt in attempts.json() if attempt["delivered"]]


def _events(platform: Platform, tracking_number: str) -> list[tuple[str, str]]:
    shipment = _track(platform, tracking_number, admin_headers(platform)).json()
    return [(event["status"], event["occurredAt"]) for event in shipment["events"]]


def _expected_rates(destination: str, grams: int) -> list[dict[str, Any]]:
    return [
        {
            "courierCompany": courier.code,
            "courierName": courier.name,
            "courierType": service.code,
            "courierServiceName": service.name,
            "description": service.description,
            "duration": f"{service.duration_range} days",
            "price": shipping_price(service, WAREHOUSE_POSTAL_CODE, destination, grams),
        }
        for courier in (COURIERS["jne"], COURIERS["jnt"], COURIERS["sicepat"])
        for service in courier.services.values()
    ]


# --- rates ----------------------------------------------------------------------------------


def test_rates_go_from_the_warehouse_to_the_buyers_default_address(
    platform: Platform, orders: list[Order]
) -> None:
    order = orders[0]  # 2 units: 600 g
    response = _rates(platform, order.buyer.headers, orderId=order.id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "orderId": order.id,
        "addressId": order.address_id,
        "originPostalCode": WAREHOUSE_POSTAL_CODE,
        "destinationPostalCode": "12190",
        "weightGrams": 600,
        "rates": _expected_rates("12190", 600),
    }
    # Bandung (region 4) to Jakarta (region 1), one kilogram: 9,000 + 3 x 2,000.
    assert body["rates"][0]["price"] == 15_000

    # The seed's body, postal codes included, asks the same; an admin may ask too.
    seed_body = {
        "orderId": order.id,
        "originPostalCode": WAREHOUSE_POSTAL_CODE,
        "destinationPostalCode": "12190",
        "couriers": ["jne", "jnt", "sicepat"],
    }
    assert _rates(platform, order.buyer.headers, **seed_body).json() == body
    assert _rates(platform, admin_headers(platform), **seed_body).json() == body


def test_rates_to_another_of_the_buyers_addresses(platform: Platform, orders: list[Order]) -> None:
    order = orders[1]
    surabaya = _address(platform, order.buyer, "60111", "Surabaya")
    response = _rates(
        platform, order.buyer.headers, orderId=order.id, addressId=surabaya["id"], couriers=["jnt"]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["addressId"], body["destinationPostalCode"], body["weightGrams"]) == (
        surabaya["id"],
        "60111",
        300,
    )
    assert body["rates"] == [
        {
            "courierCompany": "jnt",
            "courierName": "J&T",
            "courierType": "ez",
            "courierServiceName": "Reguler",
            "description": "Layanan reguler",
            "duration": "2 - 3 days",
            "price": 8_500 + 2 * 2_000,  # Bandung (region 4) to Surabaya (region 6)
        }
    ]


def test_postal_codes_that_are_not_the_shipments_are_refused(
    platform: Platform, orders: list[Order]
) -> None:
    order = orders[0]
    before = snapshot(platform, "logistics")
    for body in (
        {"destinationPostalCode": "12950"},
        {"originPostalCode": "12190"},
        {"originPostalCode": WAREHOUSE_POSTAL_CODE, "destinationPostalCode": "40124"},
    ):
        response = _rates(platform, order.buyer.headers, orderId=order.id, **body)
        assert_problem(response, 409, "postal_code_mismatch")
    assert_problem(
        _rates(platform, order.buyer.headers, orderId=order.id, destinationPostalCode="4012"),
        422,
    )
    assert snapshot(platform, "logistics") == before


def test_rates_for_what_the_buyer_may_not_see(platform: Platform, orders: list[Order]) -> None:
    mine, other = orders[0], orders[1]
    assert_problem(_rates(platform, other.buyer.headers, orderId=mine.id), 404, "order_not_found")
    assert_problem(
        _rates(platform, admin_headers(platform), orderId=str(uuid.uuid4())), 404, "order_not_found"
    )
    # Another buyer's address is not this order's to ship to.
    response = _rates(platform, mine.buyer.headers, orderId=mine.id, addressId=other.address_id)
    assert_problem(response, 404, "address_not_found")
    # A buyer without an address has nowhere to ship to yet.
    homeless = orders[3]
    response = _rates(platform, homeless.buyer.headers, orderId=homeless.id)
    assert_problem(response, 409, "no_delivery_address")


# --- shipments and tracking -----------------------------------------------------------------


def test_a_shipment_is_tracked_from_pickup_to_delivery(
    platform: Platform, orders: list[Order]
) -> None:
    order = orders[0]
    shipment = _shipped(platform, order.id)
    [booked] = _sandbox_orders(platform, order.id)
    assert shipment["biteshipOrderId"] == booked["id"]
    assert shipment["trackingNumber"] == booked["courier"]["waybill_id"]
    assert shipment["trackingNumber"].startswith("JNE")
    assert (shipment["orderId"], shipment["userId"], shipment["status"]) == (
        order.id,
        order.buyer.id,
        "confirmed",
    )
    assert (shipment["courierCompany"], shipment["courierType"], shipment["price"]) == (
        "jne",
        "reg",
        15_000,
    )
    assert (shipment["originPostalCode"], shipment["destinationPostalCode"]) == (
        WAREHOUSE_POSTAL_CODE,
        "12190",
    )
    assert shipment["destinationAddressId"] == order.address_id
    assert shipment["destinationAddress"] == "Jl. Merdeka 1, Jakarta, Jawa 12190"
    assert shipment["events"] == []
    # Biteship was asked from the warehouse to the buyer, with the order's items.
    assert booked["origin"]["postal_code"] == 40123
    assert booked["destination"]["contact_name"] == "Siti Aminah"
    assert [(i["quantity"], i["weight"]) for i in booked["items"]] == [(2, UNIT_GRAMS)]

    # Booking again answers the same shipment and books no second courier.
    again = _ship(platform, order.id)
    assert again.status_code == 200, again.text
    assert again.json() == shipment
    assert_problem(_ship(platform, order.id, "sicepat", "reg"), 409, "order_already_has_shipment")
    assert len(_sandbox_orders(platform, order.id)) == 1

    # The courier picks the parcel up: the order has shipped, with the waybill.
    tracking_number = shipment["trackingNumber"]
    assert _advance(platform, booked["id"], times=3) == "picked"
    shipped = eventually(lambda: _order_status(platform, order.id, "shipped"))
    assert shipped, _order(platform, order.id)
    assert (shipped["trackingNumber"], shipped["courier"]) == (tracking_number, "jne reg")
    assert eventually(lambda: len(_delivered_webhooks(platform, booked["id"])) == 3)
    statuses = [status for status, _ in _events(platform, tracking_number)]
    assert statuses == ["allocated", "picking_up", "picked"]

    # The same webhook twice (Biteship retrying, or sent again) is recorded once.
    picked = next(
        a for a in _delivered_webhooks(platform, booked["id"]) if a["payload"]["status"] == "picked"
    )
    before = snapshot(platform, "logistics", "order")
    events = _events(platform, tracking_number)
    for _ in range(2):
        response = platform.client("logistics").post(
            WEBHOOK, json=picked["payload"], headers=picked["headers"]
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "duplicate"}
    resent = platform.client("biteship-sandbox").post(
        f"/sandbox/orders/{booked['id']}/resend-webhook"
    )
    assert resent.status_code == 200
    assert eventually(lambda: len(_delivered_webhooks(platform, booked["id"])) == 4)
    assert _events(platform, tracking_number) == events
    assert snapshot(platform, "logistics", "order") == before

    # Delivered: the order follows.
    assert _advance(platform, booked["id"], times=2) == "delivered"
    delivered = eventually(lambda: _order_status(platform, order.id, "delivered"))
    assert delivered, _order(platform, order.id)
    tracked = _track(platform, tracking_number, order.buyer.headers)
    assert tracked.status_code == 200, tracked.text
    body = tracked.json()
    assert body["status"] == "delivered"
    assert [event["status"] for event in body["events"]] == [
        "allocated",
        "picking_up",
        "picked",
        "dropping_off",
        "delivered",
    ]
    assert body["events"][-1]["note"] == "Package has been delivered to the receiver."
    # Each event happened when Biteship's tracking history says it did.
    tracking = platform.client("biteship-sandbox").get(
        f"/v1/trackings/{booked['courier']['tracking_id']}",
        headers={"Authorization": platform.settings.biteship_api_key.get_secret_value()},
    )
    history = {
        h["status"]: datetime.fromisoformat(h["updated_at"]) for h in tracking.json()["history"]
    }
    for event in body["events"]:
        assert datetime.fromisoformat(event["occurredAt"]) == history[event["status"]]

    # The shipment read by id and by order is the same one.
    by_id = platform.client("logistics").get(
        f"{SHIPMENTS}/{shipment['id']}", headers=order.buyer.headers
    )
    assert by_id.json() == body
    by_order = platform.client("logistics").get(
        SHIPMENTS, params={"orderId": order.id}, headers=order.buyer.headers
    )
    assert [item["id"] for item in by_order.json()["items"]] == [shipment["id"]]


def test_a_delivery_reported_before_pickup_ships_the_order_first(
    platform: Platform, orders: list[Order]
) -> None:
    order = orders[1]
    shipment = _shipped(platform, order.id, "sicepat", "best")
    assert shipment["price"] == 15_000 + 3 * 2_500
    response = platform.client("biteship-sandbox").post(
        f"/sandbox/orders/{shipment['biteshipOrderId']}/status", json={"status": "delivered"}
    )
    assert response.status_code == 200, response.text
    delivered = eventually(lambda: _order_status(platform, order.id, "delivered"))
    assert delivered, _order(platform, order.id)
    assert delivered["shippedAt"] is not None
    assert delivered["trackingNumber"] == shipment["trackingNumber"]
    assert [status for status, _ in _events(platform, shipment["trackingNumber"])] == ["delivered"]


def test_an_order_service_outage_delays_the_order_never_loses_it(
    platform: Platform, orders: list[Order]
) -> None:
    order = orders[4]
    shipment = _shipped(platform, order.id, "jnt", "ez")
    platform.supervisor.stop("order")
    try:
        _advance(platform, shipment["biteshipOrderId"], times=3)  # picked
        # logistics took the webhooks while order-service was down
        assert eventually(
            lambda: len(_delivered_webhooks(platform, shipment["biteshipOrderId"])) == 3
        )
        assert _track(platform, shipment["trackingNumber"], admin_headers(platform)).json()[
            "status"
        ] == ("picked")
    finally:
        platform.supervisor.start_one("order")
        platform.supervisor.wait_ready()
    shipped = eventually(lambda: _order_status(platform, order.id, "shipped"), timeout=40)
    assert shipped, _order(platform, order.id)
    assert shipped["trackingNumber"] == shipment["trackingNumber"]


def test_two_bookings_at_once_book_one_courier(platform: Platform, orders: list[Order]) -> None:
    order = orders[5]

    async def book_twice() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=platform.url("logistics"), timeout=10.0) as api:
            body = {"orderId": order.id, "courierCompany": "jne", "courierType": "reg"}
            return list(
                await asyncio.gather(
                    *(
                        api.post(SHIPMENTS, json=body, headers=admin_headers(platform))
                        for _ in range(2)
                    )
                )
            )

    responses = asyncio.run(book_twice())
    codes = sorted(response.status_code for response in responses)
    assert codes in ([200, 201], [201, 409]), [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "shipment_in_progress")
    assert len(_sandbox_orders(platform, order.id)) == 1
    shipments = platform.client("logistics").get(
        SHIPMENTS, params={"orderId": order.id}, headers=admin_headers(platform)
    )
    assert shipments.json()["total"] == 1
    assert _booked(platform, order.id)["status"] == "confirmed"


def test_a_cancelled_order_does_not_ship(platform: Platform, orders: list[Order]) -> None:
    order = orders[2]
    cancelled = platform.client("order").post(
        f"/api/orders/{order.id}/cancel",
        json={"reason": "Buyer asked before shipping"},
        headers=admin_headers(platform),
    )
    assert cancelled.status_code == 200, cancelled.text
    before = snapshot(platform, "logistics")
    assert_problem(_ship(platform, order.id), 409, "order_not_shippable")
    assert snapshot(platform, "logistics") == before
    assert _sandbox_orders(platform, order.id) == []
    assert_problem(_ship(platform, str(uuid.uuid4())), 404, "order_not_found")
    assert snapshot(platform, "logistics") == before


def test_a_parcel_picked_up_for_an_order_cancelled_meanwhile_is_a_dead_letter(
    platform: Platform, orders: list[Order]
) -> None:
    """The courier picks up a parcel whose order an admin cancelled after it was booked:
    order-service refuses to ship a cancelled order, which no retry changes, so logistics
    dead-letters the move with why, for an admin, rather than dropping or retrying it."""
    order = orders[6]
    shipment = _shipped(platform, order.id)
    cancelled = platform.client("order").post(
        f"/api/orders/{order.id}/cancel",
        json={"reason": "Buyer asked before shipping"},
        headers=admin_headers(platform),
    )
    assert cancelled.status_code == 200, cancelled.text
    _advance(platform, shipment["biteshipOrderId"], times=3)  # picked

    def dead_letter() -> dict[str, Any] | None:
        page = platform.client("logistics").get(
            "/api/admin/outbox/dead-letters",
            params={"kind": "mark_order_shipped", "limit": 100},
            headers=admin_headers(platform),
        )
        assert page.status_code == 200, page.text
        mine = [item for item in page.json()["items"] if item["payload"]["order_id"] == order.id]
        return mine[0] if mine else None

    letter = eventually(dead_letter)
    assert letter, "the impossible move was not dead-lettered"
    assert letter["status"] == "dead_lettered" and letter["attempts"] == 1
    assert letter["reason"].startswith(f"order {order.id} is "), letter["reason"]
    assert letter["reason"].endswith(f"cannot be marked shipped (shipment {shipment['id']})"), (
        letter["reason"]
    )
    assert _order(platform, order.id)["status"] in ("cancelled", "refunded")
    summary = platform.client("logistics").get("/api/admin/outbox", headers=admin_headers(platform))
    assert summary.json()["deadLettersByKind"]["mark_order_shipped"] >= 1


# --- the webhook's guard --------------------------------------------------------------------


def test_a_webhook_without_the_secret_changes_nothing(
    platform: Platform, orders: list[Order]
) -> None:
    order = orders[7]  # no address of their own: shipped to one an admin names
    address = _address(platform, order.buyer, "20111", "Medan")
    response = platform.client("logistics").post(
        SHIPMENTS,
        json={
            "orderId": order.id,
            "courierCompany": "jne",
            "courierType": "yes",
            "addressId": address["id"],
        },
        headers=admin_headers(platform),
    )
    assert response.status_code == 201, response.text
    shipment = response.json()
    payload = {
        "event": "order.status",
        "order_id": shipment["biteshipOrderId"],
        "courier_waybill_id": shipment["trackingNumber"],
        "status": "picked",
        "updated_at": "2030-01-01T10:00:00+07:00",
    }
    before = snapshot(platform, "logistics", "order")
    secret = platform.settings.biteship_webhook_secret.get_secret_value()
    for headers in (
        {},
        {WEBHOOK_SECRET_HEADER: "not-the-secret"},
        {WEBHOOK_SECRET_HEADER: secret[:-1]},
    ):
        response = platform.client("logistics").post(WEBHOOK, json=payload, headers=headers)
        assert_problem(response, 401, "invalid_webhook_secret")
    assert snapshot(platform, "logistics", "order") == before
    assert _order(platform, order.id)["status"] == "processing"

    # With the secret it is read back from Biteship, which shows the order `confirmed`: a
    # status Biteship does not confirm moves nothing, be it picked or delivered.
    assert _sandbox_orders(platform, order.id)[0]["status"] == "confirmed"
    for status in ("picked", "delivered"):
        forged = {**payload, "status": status}
        response = platform.client("logistics").post(
            WEBHOOK, json=forged, headers={WEBHOOK_SECRET_HEADER: secret}
        )
        assert response.json() == {"status": "ignored"}
    assert snapshot(platform, "logistics", "order") == before
    assert _order(platform, order.id)["status"] == "processing"
    unconfirmed = wait_logged(
        platform, "logistics", "biteship_webhook_status_not_confirmed", shipment_id=shipment["id"]
    )
    assert {(e["reported"], e["biteship_status"]) for e in unconfirmed} == {
        ("picked", "confirmed"),
        ("delivered", "confirmed"),
    }

    # Once Biteship has the parcel picked up, its own webhook moves the order.
    picked = platform.client("biteship-sandbox").post(
        f"/sandbox/orders/{shipment['biteshipOrderId']}/status", json={"status": "picked"}
    )
    assert picked.status_code == 200, picked.text
    assert eventually(lambda: _order_status(platform, order.id, "shipped"))


def test_a_webhook_is_taken_only_for_the_status_biteship_shows(
    platform: Platform, orders: list[Order]
) -> None:
    order = orders[8]
    shipment = _booked(platform, order.id)  # booked (confirmed)
    biteship_order_id = shipment["biteshipOrderId"]
    secret = {WEBHOOK_SECRET_HEADER: platform.settings.biteship_webhook_secret.get_secret_value()}
    assert _advance(platform, biteship_order_id, times=2) == "picking_up"
    assert eventually(lambda: len(_delivered_webhooks(platform, biteship_order_id)) == 2)
    before = snapshot(platform, "logistics", "order")
    # Forged `picked` and `delivered` while Biteship shows `picking_up`: ignored.
    for status in ("picked", "delivered"):
        response = platform.client("logistics").post(
            WEBHOOK,
            json={"event": "order.status", "order_id": biteship_order_id, "status": status},
            headers=secret,
        )
        assert response.json() == {"status": "ignored"}
    # A late `allocated` is in Biteship's history, at Biteship's time: recorded already.
    for status in ("allocated", "picking_up"):
        response = platform.client("logistics").post(
            WEBHOOK,
            json={"event": "order.status", "order_id": biteship_order_id, "status": status},
            headers=secret,
        )
        assert response.json() == {"status": "duplicate"}
    assert snapshot(platform, "logistics", "order") == before
    assert _order(platform, order.id)["status"] == "processing"
    assert [status for status, _ in _events(platform, shipment["trackingNumber"])] == [
        "allocated",
        "picking_up",
    ]


def test_webhooks_for_no_shipment_of_ours_are_ignored(platform: Platform) -> None:
    headers = {WEBHOOK_SECRET_HEADER: platform.settings.biteship_webhook_secret.get_secret_value()}
    before = snapshot(platform, "logistics")
    api = platform.client("logistics")
    for body in (
        {"event": "order.status", "order_id": "f" * 24, "status": "picked"},
        {"event": "order.price", "order_id": "f" * 24, "price": 20000},
        {},
    ):
        response = api.post(WEBHOOK, json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ignored"}
    assert api.post(WEBHOOK, headers=headers).json() == {"status": "ignored"}  # no body at all
    assert snapshot(platform, "logistics") == before


# --- access ---------------------------------------------------------------------------------


def test_another_buyer_cannot_read_a_shipment(platform: Platform, orders: list[Order]) -> None:
    owner, other = orders[9], orders[10]
    shipment = _booked(platform, owner.id)
    _booked(platform, other.id)  # the other buyer has a shipment of their own
    api = platform.client("logistics")
    assert_problem(
        _track(platform, shipment["trackingNumber"], other.buyer.headers), 404, "shipment_not_found"
    )
    assert_problem(
        api.get(f"{SHIPMENTS}/{shipment['id']}", headers=other.buyer.headers),
        404,
        "shipment_not_found",
    )
    theirs = api.get(SHIPMENTS, params={"orderId": owner.id}, headers=other.buyer.headers)
    assert theirs.json()["items"] == []
    mine = api.get(SHIPMENTS, headers=other.buyer.headers).json()["items"]
    assert {item["userId"] for item in mine} == {other.buyer.id}
    assert _track(platform, shipment["trackingNumber"], admin_headers(platform)).status_code == 200
    assert_problem(
        _track(platform, "JNE000000000000", admin_headers(platform)), 404, "shipment_not_found"
    )


def test_authorisation(platform: Platform, orders: list[Order]) -> None:
    api = platform.client("logistics")
    order = orders[1]
    for response in (
        api.post(RATES, json={"orderId": order.id}),
        api.post(
            SHIPMENTS, json={"orderId": order.id, "courierCompany": "jne", "courierType": "reg"}
        ),
        api.get(SHIPMENTS),
        api.get(f"{SHIPMENTS}/track/JNE000000000000"),
        api.get(f"{SHIPMENTS}/{uuid.uuid4()}"),
    ):
        assert_problem(response, 401)
    before = snapshot(platform, "logistics")
    assert_problem(_ship(platform, orders[3].id, **order.buyer.headers), 403)
    assert snapshot(platform, "logistics") == before


# --- the typed client -----------------------------------------------------------------------


async def test_client_books_and_reads_shipments(platform: Platform, orders: list[Order]) -> None:
    order = orders[11]
    http = new_http_client(10.0)
    try:
        # One parcel at a time is booked by an admin (a service books a session's in bulk).
        tokens = FixedToken(platform.admin_token)
        client = LogisticsClient(platform.url("logistics"), http, tokens)
        booked = await client.create_shipment(
            uuid.UUID(order.id), courier_company="jne", courier_type="reg", idempotency_key="k1"
        )
        assert booked.order_id == uuid.UUID(order.id)
        assert await client.get_shipment(booked.id) == booked
        assert await client.get_shipment(uuid.uuid4()) is None
        assert len(await asyncio.to_thread(_sandbox_orders, platform, order.id)) == 1
    finally:
        await http.aclose()


# --- ready to ship: goods in hand, then the group buy's parcels ----------------------------


def _shipment_of(platform: Platform, order_id: str) -> dict[str, Any] | None:
    page = platform.client("logistics").get(
        SHIPMENTS, params={"orderId": order_id}, headers=admin_headers(platform)
    )
    assert page.status_code == 200, page.text
    items = page.json()["items"]
    return items[0] if items and items[0]["status"] != "creating" else None


async def _book_session(platform: Platform, session_id: str, idempotency_key: str) -> Any:
    """What the warehouse sends once a group buy's goods are in hand."""
    http = new_http_client(10.0)
    try:
        tokens = platform.service_token_source(http, "warehouse")
        client = LogisticsClient(platform.url("logistics"), http, tokens)
        return await client.book_session(uuid.UUID(session_id), idempotency_key=idempotency_key)
    finally:
        await http.aclose()


def test_orders_ship_only_once_their_goods_are_in_hand(platform: Platform) -> None:
    """A group buy short of stock at its close (pending_stock): its orders are not ready and
    cannot be booked. Once its purchase orders are received they are ready, their buyers told,
    and the warehouse has their shipments booked: Ani's two orders (one address) as one parcel
    with the cheapest configured courier, Budi's with the courier he chose. Booking the group
    buy again books nothing twice."""
    catalog = create_seed_catalog(platform)
    session = open_group_buy(platform, catalog, target_moq=8)
    ani_small = join_group_buy(platform, session, catalog.variants["S"], 5, pay=True)
    ani_medium = join_group_buy(
        platform, session, catalog.variants["M"], 1, pay=True, buyer=ani_small.buyer
    )
    budi = join_group_buy(platform, session, catalog.variants["M"], 2, pay=True)
    ani = ani_small.buyer
    for buyer in (ani, budi.buyer):
        _address(platform, buyer, "12190", "Jakarta")
    assert eventually(lambda: purchase_orders_of(platform, catalog))  # S fell to 3: reorder
    lost = platform.client("warehouse").post(
        f"/api/inventory/{catalog.variants['S']}/adjustments",
        json={"delta": -8, "reason": "lost"},
        headers=admin_headers(platform),
    )
    assert lost.status_code == 200, lost.text
    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "pending_stock"

    orders = {o["participantId"]: o for o in session_orders(platform, session["id"])}
    ani_orders = sorted(orders[j.id]["id"] for j in (ani_small, ani_medium))
    budi_order = orders[budi.id]["id"]
    assert all(o["readyToShipAt"] is None for o in orders.values())
    chose = platform.client("order").put(
        f"/api/orders/{budi_order}/courier",
        json={"courierCompany": "sicepat", "courierType": "reg"},
        headers=budi.buyer.headers,
    )
    assert chose.status_code == 200, chose.text
    assert chose.json()["courierChoice"] == {"courierCompany": "sicepat", "courierType": "reg"}
    before = snapshot(platform, "logistics")
    for order_id in (*ani_orders, budi_order):
        assert_problem(_ship(platform, order_id), 409, "order_not_ready")
    assert snapshot(platform, "logistics") == before

    for purchase_order in purchase_orders_of(platform, catalog):
        if purchase_order["status"] == "open":
            received = platform.client("warehouse").post(
                f"/api/purchase-orders/{purchase_order['id']}/receive",
                headers=admin_headers(platform),
            )
            assert received.status_code == 200, received.text
    shipments = eventually(
        lambda: (
            found
            if all(found := [_shipment_of(platform, o) for o in (*ani_orders, budi_order)])
            else None
        ),
        timeout=30,
    )
    assert shipments, "the group buy's shipments were never booked"
    first, second, budis = shipments
    # One parcel for Ani: one Biteship order, carrying both orders' items, priced once.
    assert first["biteshipOrderId"] == second["biteshipOrderId"]
    assert first["trackingNumber"] == second["trackingNumber"]
    [parcel] = _sandbox_orders(platform, ani_orders[0])
    assert _sandbox_orders(platform, ani_orders[1]) == []
    assert sorted(item["quantity"] for item in parcel["items"]) == [1, 5]
    cheapest = min(
        _expected_rates("12190", 6 * UNIT_GRAMS),
        key=lambda r: (r["price"], r["courierCompany"], r["courierType"]),
    )
    assert (first["courierCompany"], first["courierType"], first["price"], second["price"]) == (
        cheapest["courierCompany"],
        cheapest["courierType"],
        cheapest["price"],
        0,
    )
    assert (budis["courierCompany"], budis["courierType"]) == ("sicepat", "reg")
    assert budis["biteshipOrderId"] != first["biteshipOrderId"]
    for order_id in (*ani_orders, budi_order):
        assert _order(platform, order_id)["readyToShipAt"] is not None
    # Ani is told each order is ready to ship.
    inbox = platform.client("notification").get(
        "/api/notifications/me", params={"limit": 100}, headers=ani.headers
    )
    ready = [n for n in inbox.json()["items"] if "ready to ship" in n["subject"]]
    assert len(ready) == 2

    # Asked again (a retried delivery with another key): nothing is booked twice.
    again = asyncio.run(_book_session(platform, session["id"], uuid.uuid4().hex))
    assert (again.booked, again.existing, again.parcels, again.unbooked) == (0, 3, [], [])
    assert len(_sandbox_orders(platform, ani_orders[0])) == 1
    assert len(_sandbox_orders(platform, budi_order)) == 1

    # The parcel moves both of Ani's orders.
    assert _advance(platform, first["biteshipOrderId"], 3) == "picked"
    for order_id in ani_orders:
        assert eventually(lambda order_id=order_id: _order_status(platform, order_id, "shipped"))
    assert _order(platform, budi_order)["status"] == "processing"
