"""warehouse-service: stock, reservations, the ledger, automatic reorders and purchase orders."""

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from laku.testing.catalog import SeedCatalog, create_seed_catalog, created
from laku.testing.platform import Platform, bearer
from tests.group_buys import purchase_orders_of
from tests.support import (
    admin_headers,
    assert_problem,
    eventually,
    outbox_marks,
    outboxes_done,
    snapshot,
)


def _reserve(platform: Platform, variant_id: str, quantity: int, reference: str | None = None):
    body = {
        "reference": reference or f"test:{uuid.uuid4().hex}",
        "variantId": variant_id,
        "quantity": quantity,
    }
    return platform.client("warehouse").post(
        "/api/reservations", json=body, headers=admin_headers(platform)
    )


def _stock(platform: Platform, catalog: SeedCatalog) -> dict[str, dict[str, Any]]:
    response = platform.client("warehouse").get(
        "/api/inventory", params={"productId": catalog.product_id}, headers=admin_headers(platform)
    )
    assert response.status_code == 200, response.text
    [product] = response.json()
    by_variant = {v["variantId"]: v for v in product["variants"]}
    return {
        size: by_variant[variant_id]
        for size, variant_id in catalog.variants.items()
        if variant_id in by_variant
    }


def _available(platform: Platform, catalog: SeedCatalog) -> dict[str, int]:
    return {size: v["availableQuantity"] for size, v in _stock(platform, catalog).items()}


def _messages_to(platform: Platform, phone: str) -> list[dict[str, Any]]:
    messages = platform.client("whatsapp-sandbox").get("/sandbox/messages").json()
    return [m for m in messages if m["to"].lstrip("+") == phone.lstrip("+")]


def _ledger_consistent(platform: Platform, catalog: SeedCatalog) -> None:
    checks = platform.client("warehouse").get(
        "/api/inventory/ledger-check",
        params={"productId": catalog.product_id},
        headers=admin_headers(platform),
    )
    assert checks.status_code == 200
    assert checks.json()
    for check in checks.json():
        assert check["consistent"], check


def test_seed_inventory_flow(platform: Platform) -> None:
    """The seed's "Inventory Flow Example", as design 8 states it."""
    marks = outbox_marks(platform)
    catalog = create_seed_catalog(platform)
    assert _available(platform, catalog) == {"S": 8, "M": 8, "L": 8}

    assert _reserve(platform, catalog.variants["M"], 5).status_code == 201
    stock = _stock(platform, catalog)
    assert {size: v["availableQuantity"] for size, v in stock.items()} == {"S": 8, "M": 3, "L": 8}
    assert stock["M"]["status"] == "low_stock"
    assert stock["S"]["status"] == stock["L"]["status"] == "in_stock"

    [purchase_order] = eventually(lambda: purchase_orders_of(platform, catalog))
    assert purchase_order["bundles"] == 1
    assert purchase_order["status"] == "open"
    assert purchase_order["factoryId"] == catalog.factory_id
    units = {line["variantId"]: line["quantity"] for line in purchase_order["lines"]}
    assert units == {variant_id: 4 for variant_id in catalog.variants.values()}
    assert purchase_order["goodsCost"] == 12 * 80000
    assert (
        purchase_order["totalCost"] == purchase_order["goodsCost"] + purchase_order["shippingCost"]
    )

    [message] = eventually(lambda: _messages_to(platform, catalog.factory_phone))
    assert purchase_order["number"] in message["text"]
    assert "1 bundel" in message["text"]
    for sku in catalog.variant_skus.values():
        assert f"({sku}): 4 pcs" in message["text"]

    assert _reserve(platform, catalog.variants["M"], 2).status_code == 201
    assert _available(platform, catalog) == {"S": 8, "M": 1, "L": 8}
    outboxes_done(platform, marks)  # a wrongly raised second reorder would be here
    assert len(purchase_orders_of(platform, catalog)) == 1

    received = platform.client("warehouse").post(
        f"/api/purchase-orders/{purchase_order['id']}/receive", headers=admin_headers(platform)
    )
    assert received.status_code == 200, received.text
    assert received.json()["status"] == "received"
    stock = _stock(platform, catalog)
    assert {size: v["availableQuantity"] for size, v in stock.items()} == {"S": 8, "M": 5, "L": 8}
    assert {size: v["surplusQuantity"] for size, v in stock.items()} == {"S": 4, "M": 0, "L": 4}

    for size, surplus in (("S", 4), ("L", 4)):
        moves = platform.client("warehouse").get(
            f"/api/inventory/{catalog.variants[size]}/movements", headers=admin_headers(platform)
        )
        [surplus_move] = [m for m in moves.json() if m["kind"] == "surplus"]
        assert surplus_move["quantityDelta"] == -surplus
        assert purchase_order["number"] in surplus_move["reference"]
    _ledger_consistent(platform, catalog)
    assert len(_messages_to(platform, catalog.factory_phone)) == 1


def test_receiving_twice_changes_stock_once(platform: Platform) -> None:
    catalog = create_seed_catalog(platform, stock={"S": 4, "M": 8, "L": 8})
    [purchase_order] = eventually(lambda: purchase_orders_of(platform, catalog))
    path = f"/api/purchase-orders/{purchase_order['id']}/receive"
    for _ in range(2):
        assert (
            platform.client("warehouse").post(path, headers=admin_headers(platform)).status_code
            == 200
        )
    assert _available(platform, catalog) == {"S": 8, "M": 8, "L": 8}
    assert {s: v["surplusQuantity"] for s, v in _stock(platform, catalog).items()} == {
        "S": 0,
        "M": 4,
        "L": 4,
    }
    _ledger_consistent(platform, catalog)


def test_reservation_is_idempotent_by_reference(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    reference = f"participant:{uuid.uuid4()}"
    first = _reserve(platform, catalog.variants["S"], 3, reference)
    again = _reserve(platform, catalog.variants["S"], 3, reference)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["reference"] == reference
    assert _available(platform, catalog)["S"] == 5
    reused = _reserve(platform, catalog.variants["S"], 2, reference)
    assert_problem(reused, 409, "reference_reused")
    assert _available(platform, catalog)["S"] == 5


def test_release_and_deduct(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    warehouse = platform.client("warehouse")
    kept, returned = f"keep:{uuid.uuid4()}", f"return:{uuid.uuid4()}"
    _reserve(platform, catalog.variants["L"], 2, kept)
    _reserve(platform, catalog.variants["L"], 3, returned)
    for _ in range(2):  # each transition is idempotent
        released = warehouse.post(
            f"/api/reservations/{returned}/release", headers=admin_headers(platform)
        )
        assert released.json()["status"] == "released"
        deducted = warehouse.post(
            f"/api/reservations/{kept}/deduct", headers=admin_headers(platform)
        )
        assert deducted.json()["status"] == "deducted"
    stock = _stock(platform, catalog)["L"]
    assert (stock["quantity"], stock["reservedQuantity"], stock["availableQuantity"]) == (6, 0, 6)
    assert_problem(
        warehouse.post(f"/api/reservations/{kept}/release", headers=admin_headers(platform)),
        409,
        "reservation_deducted",
    )
    assert_problem(
        warehouse.post(f"/api/reservations/{returned}/deduct", headers=admin_headers(platform)),
        409,
        "reservation_released",
    )
    assert_problem(
        warehouse.post("/api/reservations/no-such-thing/deduct", headers=admin_headers(platform)),
        404,
        "reservation_not_found",
    )
    _ledger_consistent(platform, catalog)


def test_more_than_available_is_refused_and_reserves_nothing(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    before = snapshot(platform, "warehouse")
    assert_problem(_reserve(platform, catalog.variants["S"], 9), 409, "insufficient_stock")
    assert snapshot(platform, "warehouse") == before


def test_adjustments(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    warehouse = platform.client("warehouse")
    path = f"/api/inventory/{catalog.variants['S']}/adjustments"
    _reserve(platform, catalog.variants["S"], 6)
    assert_problem(
        warehouse.post(
            path, json={"delta": -9, "reason": "damaged"}, headers=admin_headers(platform)
        ),
        409,
        "adjustment_below_zero",
    )
    # Stock lost after it was promised is lost all the same: the variant is now short.
    adjusted = warehouse.post(
        path, json={"delta": -3, "reason": "damaged"}, headers=admin_headers(platform)
    )
    assert adjusted.status_code == 200, adjusted.text
    assert (adjusted.json()["quantity"], adjusted.json()["availableQuantity"]) == (5, -1)
    assert adjusted.json()["status"] == "out_of_stock"
    assert_problem(_reserve(platform, catalog.variants["S"], 1), 409, "insufficient_stock")
    moves = warehouse.get(
        f"/api/inventory/{catalog.variants['S']}/movements", headers=admin_headers(platform)
    )
    assert moves.json()[0]["kind"] == "adjust"
    assert moves.json()[0]["reason"] == "damaged"
    _ledger_consistent(platform, catalog)


@pytest.mark.parametrize(
    "change",
    [
        lambda item: {**item, "quantity": 9},  # above the maximum
        lambda item: {**item, "reorderThreshold": 8},  # threshold not below the maximum
        lambda item: {**item, "quantity": -1},
        lambda item: {**item, "quantity": 1.5},
        lambda item: {**item, "quantity": "8"},
        lambda item: {**item, "variantId": str(uuid.uuid4())},  # not a variant of the product
        lambda item: {**item, "productId": str(uuid.uuid4())},  # no such product
        lambda item: {k: v for k, v in item.items() if k != "maxStockLevel"},
    ],
)
def test_invalid_inventory_is_refused_and_changes_nothing(
    platform: Platform, change: Callable[[dict], dict]
) -> None:
    catalog = create_seed_catalog(platform, stock={})
    items = [
        {
            "productId": catalog.product_id,
            "variantId": variant_id,
            "quantity": 8,
            "maxStockLevel": 8,
            "reorderThreshold": 4,
        }
        for variant_id in catalog.variants.values()
    ]
    items[2] = change(items[2])
    before = snapshot(platform, "warehouse")
    response = platform.client("warehouse").post(
        "/api/inventory", json=items, headers=admin_headers(platform)
    )
    assert_problem(response, 422)
    assert snapshot(platform, "warehouse") == before


def test_inventory_exists_once(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    before = snapshot(platform, "warehouse")
    again = [
        {
            "productId": catalog.product_id,
            "variantId": catalog.variants["S"],
            "quantity": 1,
            "maxStockLevel": 8,
            "reorderThreshold": 4,
        }
    ]
    response = platform.client("warehouse").post(
        "/api/inventory", json=again, headers=admin_headers(platform)
    )
    assert_problem(response, 409, "inventory_exists")
    assert snapshot(platform, "warehouse") == before


def test_authorisation(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    buyer = platform.new_buyer()
    warehouse = platform.client("warehouse")
    reservation = {"reference": "x:1", "variantId": catalog.variants["S"], "quantity": 1}
    for method, path, body in [
        ("POST", "/api/inventory", []),
        ("GET", "/api/inventory", None),
        ("GET", "/api/inventory/low-stock", None),
        ("POST", "/api/reservations", reservation),
        (
            "POST",
            f"/api/inventory/{catalog.variants['S']}/adjustments",
            {"delta": 1, "reason": "x"},
        ),
        ("GET", "/api/purchase-orders", None),
    ]:
        assert_problem(warehouse.request(method, path, json=body), 401)
        assert_problem(warehouse.request(method, path, json=body, headers=buyer.headers), 403)


def test_factory_sees_and_ships_only_its_own_purchase_orders(platform: Platform) -> None:
    mine = create_seed_catalog(platform, stock={"S": 3, "M": 8, "L": 8})
    theirs = create_seed_catalog(platform, stock={"S": 3, "M": 8, "L": 8})
    [own_order] = eventually(lambda: purchase_orders_of(platform, mine))
    [other_order] = eventually(lambda: purchase_orders_of(platform, theirs))

    email = f"gudang-{uuid.uuid4().hex[:8]}@laku.id"
    created(
        platform.client("factory").post(
            f"/api/factories/{mine.factory_id}/users",
            json={"email": email, "password": "factory-password", "name": "Admin Pabrik"},
            headers=admin_headers(platform),
        )
    )
    factory = bearer(platform.login(email, "factory-password"))
    warehouse = platform.client("warehouse")
    listed = warehouse.get("/api/purchase-orders", headers=factory).json()["items"]
    assert {po["id"] for po in listed} == {own_order["id"]}
    assert_problem(warehouse.get(f"/api/purchase-orders/{other_order['id']}", headers=factory), 404)
    ship = {"trackingNumber": "JNE-123456"}
    assert_problem(
        warehouse.post(
            f"/api/purchase-orders/{other_order['id']}/ship", json=ship, headers=factory
        ),
        404,
    )
    shipped = warehouse.post(
        f"/api/purchase-orders/{own_order['id']}/ship", json=ship, headers=factory
    )
    assert shipped.status_code == 200, shipped.text
    assert (shipped.json()["status"], shipped.json()["trackingNumber"]) == ("shipped", "JNE-123456")
    assert_problem(
        warehouse.post(f"/api/purchase-orders/{own_order['id']}/receive", headers=factory), 403
    )
    cancelled = warehouse.post(
        f"/api/purchase-orders/{other_order['id']}/cancel", headers=admin_headers(platform)
    )
    assert cancelled.json()["status"] == "cancelled"
    assert_problem(
        warehouse.post(
            f"/api/purchase-orders/{other_order['id']}/receive", headers=admin_headers(platform)
        ),
        409,
        "invalid_status",
    )


async def _concurrently(platform: Platform, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(
        base_url=platform.url("warehouse"),
        headers=admin_headers(platform),
        timeout=30,
        limits=limits,
    ) as client:
        return await asyncio.gather(
            *(client.post("/api/reservations", json=body) for body in requests)
        )


def test_200_concurrent_reservations_against_100_units(platform: Platform) -> None:
    catalog = create_seed_catalog(
        platform, stock={"S": 100}, max_stock_level=200, reorder_threshold=10
    )
    requests = [
        {"reference": f"race:{uuid.uuid4()}", "variantId": catalog.variants["S"], "quantity": 1}
        for _ in range(200)
    ]
    responses = asyncio.run(_concurrently(platform, requests))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 100, statuses
    assert statuses.count(409) == 100
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"insufficient_stock"}
    stock = _stock(platform, catalog)["S"]
    assert (stock["quantity"], stock["reservedQuantity"], stock["availableQuantity"]) == (
        100,
        100,
        0,
    )
    _ledger_consistent(platform, catalog)


def test_concurrent_low_stock_crossings_raise_one_purchase_order(platform: Platform) -> None:
    marks = outbox_marks(platform)
    catalog = create_seed_catalog(platform)
    # Every variant crosses its threshold at the same moment, several times over.
    requests = [
        {"reference": f"cross:{uuid.uuid4()}", "variantId": variant_id, "quantity": 2}
        for variant_id in catalog.variants.values()
        for _ in range(4)
    ]
    responses = asyncio.run(_concurrently(platform, requests))
    assert all(r.status_code == 201 for r in responses)
    orders = eventually(lambda: purchase_orders_of(platform, catalog))
    outboxes_done(platform, marks)  # every reorder the crossings asked for is raised
    orders = purchase_orders_of(platform, catalog)
    assert len(orders) == 1
    # All three are at 0 available: 5 units each lifts them above the threshold of 4 -> 2 bundles.
    assert orders[0]["bundles"] == 2
    assert len(eventually(lambda: _messages_to(platform, catalog.factory_phone))) == 1


def test_purchase_order_survives_a_whatsapp_outage(platform: Platform) -> None:
    platform.supervisor.stop("whatsapp-sandbox")
    try:
        catalog = create_seed_catalog(platform)
        assert _reserve(platform, catalog.variants["M"], 5).status_code == 201
        [purchase_order] = eventually(lambda: purchase_orders_of(platform, catalog))
        assert purchase_order["status"] == "open"
        time.sleep(1.0)
    finally:
        platform.supervisor.start_one("whatsapp-sandbox")
        platform.supervisor.wait_ready()
    messages = eventually(lambda: _messages_to(platform, catalog.factory_phone), timeout=40)
    assert len(messages) == 1
    assert purchase_order["number"] in messages[0]["text"]


def test_a_variant_still_low_after_receipt_is_reordered(platform: Platform) -> None:
    """A fall while an order is open raises nothing; receiving that order looks again."""
    catalog = create_seed_catalog(
        platform, stock={"S": 12, "M": 12, "L": 12}, max_stock_level=20, reorder_threshold=5
    )
    for quantity in (6, 1):
        assert _reserve(platform, catalog.variants["M"], quantity).status_code == 201
    [first] = eventually(lambda: purchase_orders_of(platform, catalog))
    assert first["bundles"] == 1
    assert _reserve(platform, catalog.variants["M"], 5).status_code == 201
    received = platform.client("warehouse").post(
        f"/api/purchase-orders/{first['id']}/receive", headers=admin_headers(platform)
    )
    assert received.status_code == 200
    assert _available(platform, catalog)["M"] == 4

    def reorder() -> list[dict[str, Any]]:
        return [po for po in purchase_orders_of(platform, catalog) if po["status"] == "open"]

    [second] = eventually(reorder)
    assert second["id"] != first["id"]
    assert second["bundles"] == 1  # 4 + 4 = 8 lifts M above its threshold of 5


def test_receipt_moves_only_received_units_to_surplus(platform: Platform) -> None:
    catalog = create_seed_catalog(platform, stock={"S": 4, "M": 8, "L": 8})
    [purchase_order] = eventually(lambda: purchase_orders_of(platform, catalog))
    adjust = f"/api/inventory/{catalog.variants['M']}/adjustments"
    response = platform.client("warehouse").post(
        adjust, json={"delta": 2, "reason": "found in recount"}, headers=admin_headers(platform)
    )
    assert response.json()["availableQuantity"] == 10  # above the maximum of 8
    platform.client("warehouse").post(
        f"/api/purchase-orders/{purchase_order['id']}/receive", headers=admin_headers(platform)
    )
    stock = _stock(platform, catalog)
    assert (stock["M"]["availableQuantity"], stock["M"]["surplusQuantity"]) == (10, 4)
    _ledger_consistent(platform, catalog)


def _group_reserve(platform: Platform, variant_id: str, quantity: int, group: str):
    body = {
        "reference": f"participant:{uuid.uuid4()}",
        "variantId": variant_id,
        "quantity": quantity,
        "group": group,
    }
    response = platform.client("warehouse").post(
        "/api/reservations", json=body, headers=admin_headers(platform)
    )
    assert response.status_code == 201, response.text
    return body["reference"]


def _group_action(platform: Platform, group: str, action: str, body: dict | None = None):
    return platform.client("warehouse").post(
        f"/api/reservation-groups/{group}/{action}", json=body, headers=admin_headers(platform)
    )


def test_a_failed_group_releases_all_its_reservations_once(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    group = f"session:{uuid.uuid4()}"
    for size, quantity in (("S", 2), ("M", 3), ("M", 1)):
        _group_reserve(platform, catalog.variants[size], quantity, group)
    _reserve(platform, catalog.variants["L"], 2)  # outside the group: stays reserved
    unpaid = _group_reserve(platform, catalog.variants["L"], 1, group)
    only_unpaid = _group_action(platform, group, "release", {"references": [unpaid]})
    assert (only_unpaid.json()["released"], only_unpaid.json()["units"]) == (1, 1)
    released = _group_action(platform, group, "release")
    assert released.status_code == 200, released.text
    assert (released.json()["released"], released.json()["units"]) == (3, 6)
    assert _group_action(platform, group, "release").json()["released"] == 0
    assert _available(platform, catalog) == {"S": 8, "M": 8, "L": 6}
    _ledger_consistent(platform, catalog)


def _confirm_group(platform: Platform, group: str, references: list[str]) -> dict[str, Any]:
    confirmed = _group_action(platform, group, "confirm", {"references": references})
    assert confirmed.status_code == 200, confirmed.text
    return confirmed.json()


def test_a_closed_group_takes_only_its_paid_reservations_out_of_stock_once(
    platform: Platform,
) -> None:
    """The close names the paid reservations; the fulfilment takes those from stock and
    releases the group's others (unpaid joins whose release had not come yet)."""
    catalog = create_seed_catalog(platform)
    group = f"session:{uuid.uuid4()}"
    paid = [
        _group_reserve(platform, catalog.variants["S"], 2, group),
        _group_reserve(platform, catalog.variants["M"], 3, group),
    ]
    _group_reserve(platform, catalog.variants["M"], 2, group)  # unpaid
    _group_reserve(platform, catalog.variants["L"], 1, group)  # unpaid
    unknown = f"participant:{uuid.uuid4()}"
    for _ in range(2):  # confirming again changes nothing
        confirmed = _confirm_group(platform, group, [*paid, unknown])
        assert confirmed["unknown"] == [unknown]
    assert confirmed["confirmed"] == 0  # the first call confirmed both
    for _ in range(2):
        fulfilled = _group_action(platform, group, "fulfil", {"productId": catalog.product_id})
        assert fulfilled.status_code == 200, fulfilled.text
        assert (fulfilled.json()["status"], fulfilled.json()["units"]) == ("fulfilled", 5)
    stock = _stock(platform, catalog)
    assert {s: (v["quantity"], v["reservedQuantity"]) for s, v in stock.items()} == {
        "S": (6, 0),
        "M": (5, 0),
        "L": (8, 0),
    }
    _ledger_consistent(platform, catalog)


def test_a_short_group_waits_for_bundles_then_is_fulfilled(platform: Platform) -> None:
    marks = outbox_marks(platform)
    catalog = create_seed_catalog(platform)
    group = f"session:{uuid.uuid4()}"
    paid = _group_reserve(platform, catalog.variants["M"], 7, group)
    _confirm_group(platform, group, [paid])
    [reorder] = eventually(lambda: purchase_orders_of(platform, catalog))  # M fell to 1: 1 bundle
    lost = platform.client("warehouse").post(
        f"/api/inventory/{catalog.variants['M']}/adjustments",
        json={"delta": -8, "reason": "water damage"},
        headers=admin_headers(platform),
    )
    assert lost.json()["availableQuantity"] == -7

    waiting = _group_action(platform, group, "fulfil", {"productId": catalog.product_id})
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["status"] == "awaiting_stock"
    order_id = waiting.json()["purchaseOrderId"]
    order = platform.client("warehouse").get(
        f"/api/purchase-orders/{order_id}", headers=admin_headers(platform)
    )
    # 7 short, 4 already on order: one more bundle, with every variant of the bundle on it.
    assert (order.json()["reason"], order.json()["bundles"]) == ("group_shortage", 1)
    assert {line["quantity"] for line in order.json()["lines"]} == {4}
    again = _group_action(platform, group, "fulfil", {"productId": catalog.product_id})
    assert again.json()["purchaseOrderId"] == order_id  # asking again orders nothing more

    def fulfilment() -> str:
        return (
            platform.client("warehouse")
            .get(f"/api/reservation-groups/{group}/fulfilment", headers=admin_headers(platform))
            .json()["status"]
        )

    for purchase_order_id in (reorder["id"], order_id):
        received = platform.client("warehouse").post(
            f"/api/purchase-orders/{purchase_order_id}/receive", headers=admin_headers(platform)
        )
        assert received.status_code == 200
        if purchase_order_id == reorder["id"]:
            outboxes_done(platform, marks)  # the fulfilment has looked at the stock again
            assert fulfilment() == "awaiting_stock"  # 4 of the 7 are in
    assert eventually(lambda: fulfilment() == "fulfilled")
    stock = _stock(platform, catalog)
    assert (stock["M"]["quantity"], stock["M"]["reservedQuantity"]) == (1, 0)  # 0 + 4 + 4 - 7
    _ledger_consistent(platform, catalog)


def test_reservations_are_idempotent_by_reference_without_the_key_store(
    platform: Platform,
) -> None:
    """Internal callers send an Idempotency-Key on every write; a reservation answers repeats
    by its reference, so the key store is not touched on the hottest path."""
    catalog = create_seed_catalog(platform)
    key = f"reserve:{uuid.uuid4()}"
    body = {"reference": key, "variantId": catalog.variants["S"], "quantity": 1}
    headers = {**admin_headers(platform), "Idempotency-Key": key}
    warehouse = platform.client("warehouse")
    first = warehouse.post("/api/reservations", json=body, headers=headers)
    again = warehouse.post("/api/reservations", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert "idempotent-replayed" not in again.headers
    [stored] = platform.sql("SELECT count(*) FROM warehouse.idempotency_keys WHERE key = $1", key)
    assert stored[0] == 0
