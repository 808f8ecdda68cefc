"""order-service: a successful group buy's orders, made in bulk for its paid participants (seed
step 6), and read by their buyers.

The group buys are real: buyers join through group-buying, pay in the Xendit sandbox, and the
session reaches its MOQ before any order is asked for.
"""

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from laku.core.http import ServiceCallError, new_http_client
from laku.order.client import OrderClient, OrderStatus
from laku.testing.catalog import SeedCatalog, create_seed_catalog
from laku.testing.platform import Account, Platform
from tests.group_buys import session_of
from tests.joins import all_participants, join_created, open_seed_session, paid_through
from tests.support import admin_headers, assert_problem, eventually, snapshot

BULK = "/api/orders/bulk"
ORDERS = "/api/orders"
TARGET_MOQ = 5


@dataclass(frozen=True)
class GroupBuy:
    """A session that reached its MOQ: two buyers paid (3 M, then 2 S), a third joined after
    and never paid."""

    catalog: SeedCatalog
    session: dict[str, Any]
    paid: dict[str, Account]  # participant id -> buyer
    unpaid: Account

    @property
    def id(self) -> str:
        return self.session["id"]


def _group_buy(platform: Platform, first_buyer: Account | None = None) -> GroupBuy:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog, target_moq=TARGET_MOQ)
    paid: dict[str, Account] = {}
    for buyer, size, quantity in (
        (first_buyer or platform.new_buyer(), "M", 3),
        (platform.new_buyer(), "S", 2),
    ):
        joined = join_created(platform, buyer, session, catalog.variants[size], quantity)
        paid[paid_through(platform, buyer, session, joined)["id"]] = buyer
    unpaid = platform.new_buyer()
    join_created(platform, unpaid, session, catalog.variants["L"], 1)
    reached = eventually(lambda: session_of(platform, session["id"])["status"] == "moq_reached")
    assert reached, session_of(platform, session["id"])
    return GroupBuy(catalog, session, paid, unpaid)


def _bulk(platform: Platform, session_id: str, **headers: str) -> httpx.Response:
    return platform.client("order").post(
        BULK, json={"groupSessionId": session_id}, headers=headers or admin_headers(platform)
    )


def _created(platform: Platform, session_id: str) -> dict[str, Any]:
    response = _bulk(platform, session_id)
    assert response.status_code == 201, response.text
    return response.json()


def _orders(platform: Platform, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = platform.client("order").get(ORDERS, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _session_orders(platform: Platform, session_id: str) -> list[dict[str, Any]]:
    return _orders(platform, admin_headers(platform), sessionId=session_id, limit=100)["items"]


def _summary(platform: Platform, session_id: str) -> dict[str, Any]:
    response = platform.client("order").get(
        f"{ORDERS}/by-session/{session_id}/summary", headers=admin_headers(platform)
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def ordered(platform: Platform) -> GroupBuy:
    """A group buy whose orders have been made."""
    group = _group_buy(platform)
    _created(platform, group.id)
    return group


# --- bulk creation -------------------------------------------------------------------------


def test_an_order_for_each_paid_participant(platform: Platform) -> None:
    group = _group_buy(platform)
    catalog = group.catalog
    assert _created(platform, group.id) == {
        "groupSessionId": group.id,
        "created": 2,
        "existing": 0,
        "total": 2,
    }

    orders = _session_orders(platform, group.id)
    participants = {p["id"]: p for p in all_participants(platform, group.id, "paid")}
    assert {order["participantId"] for order in orders} == set(participants) == set(group.paid)
    assert group.unpaid.id not in {order["userId"] for order in orders}
    sizes = {variant_id: size for size, variant_id in catalog.variants.items()}
    variant_names = {"S": "Small", "M": "Medium", "L": "Large"}
    for order in orders:
        participant = participants[order["participantId"]]
        size = sizes[participant["variantId"]]
        price = participant.get("finalUnitPrice") or participant["unitPrice"]
        assert re.fullmatch(r"ORD-\d{8}-\d+", order["orderNumber"]), order["orderNumber"]
        assert order["status"] == "processing"
        assert order["groupSessionId"] == group.id
        assert order["userId"] == participant["userId"] == group.paid[participant["id"]].id
        assert order["paymentId"] == participant["paymentId"]
        assert order["productId"] == catalog.product_id
        assert order["productSnapshot"] == {
            "sku": catalog.product_sku,
            "name": "Premium T-Shirt",
            "factoryId": catalog.factory_id,
            "variantId": participant["variantId"],
            "variantSku": catalog.variant_skus[size],
            "variantName": variant_names[size],
            "imageUrl": None,
        }
        [item] = order["items"]
        assert item["variantId"] == participant["variantId"]
        assert item["sku"] == catalog.variant_skus[size]
        assert item["name"] == f"Premium T-Shirt ({variant_names[size]})"
        assert (item["quantity"], item["unitPrice"]) == (participant["quantity"], price)
        assert item["totalPrice"] == order["subtotal"] == participant["quantity"] * price
    # M joined first at priceTier25; S at 60% of the MOQ, priceTier50.
    assert sorted(order["subtotal"] for order in orders) == [2 * 85000, 3 * 95000]
    assert len({order["orderNumber"] for order in orders}) == 2

    summary = _summary(platform, group.id)
    assert summary["groupSessionId"] == group.id
    assert (summary["orders"], summary["units"], summary["subtotal"]) == (2, 5, 455000)
    assert summary["byStatus"] == {status.value: 0 for status in OrderStatus} | {"processing": 2}


def test_calling_again_finds_the_orders_it_made(platform: Platform) -> None:
    group = _group_buy(platform)
    assert _created(platform, group.id)["created"] == 2
    first = _session_orders(platform, group.id)
    before = snapshot(platform, "order")

    again = _created(platform, group.id)
    assert (again["created"], again["existing"], again["total"]) == (0, 2, 2)
    assert _session_orders(platform, group.id) == first
    assert snapshot(platform, "order") == before


def test_concurrent_calls_make_each_order_once(platform: Platform) -> None:
    group = _group_buy(platform)

    async def call_twice() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=platform.url("order"), timeout=10.0) as api:
            return list(
                await asyncio.gather(
                    *(
                        api.post(
                            BULK, json={"groupSessionId": group.id}, headers=admin_headers(platform)
                        )
                        for _ in range(2)
                    )
                )
            )

    responses = asyncio.run(call_twice())
    assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
    counts = sorted((r.json()["created"], r.json()["existing"]) for r in responses)
    assert counts == [(0, 2), (2, 0)]
    orders = _session_orders(platform, group.id)
    assert sorted(order["participantId"] for order in orders) == sorted(group.paid)
    assert [len(order["items"]) for order in orders] == [1, 1]


def test_only_a_session_that_reached_its_moq_gets_orders(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog, target_moq=TARGET_MOQ)
    before = snapshot(platform, "order")
    assert session_of(platform, session["id"])["status"] == "forming"
    assert_problem(_bulk(platform, session["id"]), 409, "session_not_successful")

    buyer = platform.new_buyer()
    joined = join_created(platform, buyer, session, catalog.variants["M"], TARGET_MOQ - 1)
    paid_through(platform, buyer, session, joined)
    assert session_of(platform, session["id"])["status"] == "active"
    assert_problem(_bulk(platform, session["id"]), 409, "session_not_successful")
    assert snapshot(platform, "order") == before


def test_unknown_session(platform: Platform) -> None:
    before = snapshot(platform, "order")
    assert_problem(_bulk(platform, str(uuid.uuid4())), 404, "session_not_found")
    assert snapshot(platform, "order") == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"groupSessionId": "not-a-uuid"},
        {"groupSessionId": None},
        {"groupSessionId": str(uuid.uuid4()), "userId": str(uuid.uuid4())},
        {"sessionId": str(uuid.uuid4())},
        [],
    ],
)
def test_invalid_bodies_change_nothing(platform: Platform, body: Any) -> None:
    before = snapshot(platform, "order")
    response = platform.client("order").post(BULK, json=body, headers=admin_headers(platform))
    assert_problem(response, 422, "invalid_input")
    assert snapshot(platform, "order") == before


# --- reading orders ------------------------------------------------------------------------


def test_buyers_see_only_their_own_orders(platform: Platform, ordered: GroupBuy) -> None:
    orders = _session_orders(platform, ordered.id)
    api = platform.client("order")
    for order in orders:
        owner = ordered.paid[order["participantId"]]
        mine = _orders(platform, owner.headers)
        assert [item["id"] for item in mine["items"]] == [order["id"]]
        assert mine["total"] == 1
        assert api.get(f"{ORDERS}/{order['id']}", headers=owner.headers).json() == order
        assert api.get(f"{ORDERS}/{order['id']}", headers=admin_headers(platform)).json() == order
        for other in (ordered.unpaid, *(b for b in ordered.paid.values() if b != owner)):
            assert_problem(
                api.get(f"{ORDERS}/{order['id']}", headers=other.headers), 404, "order_not_found"
            )
    assert _orders(platform, ordered.unpaid.headers)["items"] == []
    assert_problem(
        api.get(ORDERS, params={"userId": orders[0]["userId"]}, headers=ordered.unpaid.headers),
        403,
    )
    assert_problem(
        api.get(f"{ORDERS}/{uuid.uuid4()}", headers=admin_headers(platform)), 404, "order_not_found"
    )


def test_a_buyers_orders_are_paged_newest_first(platform: Platform) -> None:
    buyer = platform.new_buyer()
    older, newer = _group_buy(platform, buyer), _group_buy(platform, buyer)
    _created(platform, older.id)
    _created(platform, newer.id)

    mine = _orders(platform, buyer.headers)
    assert mine["total"] == 2
    assert [order["groupSessionId"] for order in mine["items"]] == [newer.id, older.id]
    page = _orders(platform, buyer.headers, limit=1, offset=1)
    assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)
    assert [order["groupSessionId"] for order in page["items"]] == [older.id]
    just_older = _orders(platform, buyer.headers, sessionId=older.id)["items"]
    assert [order["groupSessionId"] for order in just_older] == [older.id]


def test_admin_filters(platform: Platform, ordered: GroupBuy) -> None:
    admin = admin_headers(platform)
    participant_id, buyer = next(iter(ordered.paid.items()))
    by_user = _orders(platform, admin, userId=buyer.id)["items"]
    assert [order["participantId"] for order in by_user] == [participant_id]
    processing = _orders(platform, admin, sessionId=ordered.id, status="processing")
    assert processing["total"] == 2
    assert _orders(platform, admin, sessionId=ordered.id, status="shipped")["total"] == 0
    assert_problem(
        platform.client("order").get(ORDERS, params={"status": "lost"}, headers=admin), 422
    )


def test_a_session_without_orders_sums_to_zero(platform: Platform) -> None:
    summary = _summary(platform, str(uuid.uuid4()))
    assert (summary["orders"], summary["units"], summary["subtotal"]) == (0, 0, 0)
    assert set(summary["byStatus"].values()) == {0}


def test_authorisation(platform: Platform, ordered: GroupBuy) -> None:
    api = platform.client("order")
    order_id = _session_orders(platform, ordered.id)[0]["id"]
    summary = f"{ORDERS}/by-session/{ordered.id}/summary"
    for response in (
        api.post(BULK, json={"groupSessionId": ordered.id}),
        api.get(ORDERS),
        api.get(f"{ORDERS}/{order_id}"),
        api.get(summary),
    ):
        assert_problem(response, 401)
    buyer = next(iter(ordered.paid.values()))
    before = snapshot(platform, "order")
    assert_problem(_bulk(platform, ordered.id, **buyer.headers), 403)
    assert snapshot(platform, "order") == before
    assert_problem(api.get(summary, headers=buyer.headers), 403)


# --- the typed client ----------------------------------------------------------------------


async def test_client_creates_once_per_key_and_reads_orders(platform: Platform) -> None:
    group = await asyncio.to_thread(_group_buy, platform)
    http = new_http_client(10.0)
    try:
        tokens = platform.service_token_source(http, "group-buying")
        client = OrderClient(platform.url("order"), http, tokens)
        session_id = uuid.UUID(group.id)

        first = await client.create_bulk(session_id, idempotency_key=f"orders:{group.id}")
        assert (first.created, first.existing, first.total) == (2, 0, 2)
        # The same key is answered with the first response, a new key finds the orders made.
        replayed = await client.create_bulk(session_id, idempotency_key=f"orders:{group.id}")
        assert replayed == first
        again = await client.create_bulk(session_id, idempotency_key=f"orders-again:{group.id}")
        assert (again.created, again.existing, again.total) == (0, 2, 2)

        [order, _] = await asyncio.to_thread(_session_orders, platform, group.id)
        # Logistics-service is the one that reads orders one by one.
        reader = OrderClient(
            platform.url("order"), http, platform.service_token_source(http, "logistics")
        )
        read = await reader.get_order(uuid.UUID(order["id"]))
        assert read is not None
        assert read.status is OrderStatus.PROCESSING
        assert str(read.participant_id) == order["participantId"]
        assert read.items[0].total_price == read.subtotal
        assert await reader.get_order(uuid.uuid4()) is None

        with pytest.raises(ServiceCallError) as missing:
            await client.create_bulk(uuid.uuid4(), idempotency_key=uuid.uuid4().hex)
        assert (missing.value.status, missing.value.code) == (404, "session_not_found")
    finally:
        await http.aclose()
