"""warehouse-service under random sequences of reserve, replay, release, deduct, adjust and
purchase-order receipts, checked after every step against a model of design 8."""

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from laku.testing.catalog import SIZES, SeedCatalog, create_seed_catalog
from laku.testing.platform import Platform, bearer
from tests.support import assert_problem

MAX_STOCK_LEVEL = 14  # a bundle on top of untouched stock overflows into surplus
REORDER_THRESHOLD = 5
INITIAL_STOCK = 12
UNITS_IN_BUNDLE = 4
OPEN_STATUSES = ("open", "shipped")
PURCHASE_ORDER_WAIT = 2.0  # seconds to wait for the outbox relay to raise an expected reorder


def expected_status(available: int) -> str:
    if available <= 0:
        return "out_of_stock"
    if available <= REORDER_THRESHOLD:
        return "low_stock"
    return "in_stock"


@dataclass
class Stock:
    """The model of one variant's inventory row."""

    on_hand: int
    reserved: int = 0
    surplus: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass
class Held:
    """The model of one reservation."""

    size: str
    quantity: int
    status: str = "reserved"


class WarehouseMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")
    closed_orders = Bundle("closed_orders")

    def __init__(self, platform: Platform) -> None:
        super().__init__()
        self.platform = platform
        self.warehouse = platform.client("warehouse")
        self.admin = bearer(platform.admin_token)
        self.catalog: SeedCatalog | None = None
        self.stock: dict[str, Stock] = {}
        self.held: dict[str, Held] = {}
        self.order_status: dict[str, str] = {}  # purchase orders this run received or cancelled
        # Falls to the threshold (each enqueues a reorder) and how many were already waited for.
        self.falls = 0
        self.falls_awaited = 0
        self.lowest_available = 0  # counted losses can take it below zero

    # HTTP ------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.warehouse.post(path, json=body, headers=self.admin)

    def _get(self, path: str, **params: str) -> Any:
        response = self.warehouse.get(path, params=params, headers=self.admin)
        assert response.status_code == 200, response.text
        return response.json()

    def _variant(self, size: str) -> str:
        assert self.catalog is not None
        return self.catalog.variants[size]

    def _size_of(self, variant_id: str) -> str:
        assert self.catalog is not None
        [size] = [s for s, v in self.catalog.variants.items() if v == variant_id]
        return size

    def _purchase_orders(self) -> list[dict[str, Any]]:
        assert self.catalog is not None
        return self._get("/api/purchase-orders", productId=self.catalog.product_id)["items"]

    def _open_order(self) -> dict[str, Any] | None:
        """The open purchase order, if any. After a fall to the threshold that no earlier call
        waited for, give the outbox relay a moment to raise it."""
        wait = PURCHASE_ORDER_WAIT if self.falls > self.falls_awaited else 0
        self.falls_awaited = self.falls
        deadline = time.monotonic() + wait
        while True:
            open_orders = [o for o in self._purchase_orders() if o["status"] in OPEN_STATUSES]
            if open_orders or time.monotonic() >= deadline:
                return open_orders[0] if open_orders else None
            time.sleep(0.05)

    # Model -----------------------------------------------------------------------------------

    def _reorder_due(self) -> bool:
        """A purchase order may be open: a variant is low, or a fall is not yet waited for."""
        return self.falls > self.falls_awaited or any(
            stock.available <= REORDER_THRESHOLD for stock in self.stock.values()
        )

    def _recheck_reorder(self) -> None:
        """Receiving or cancelling a purchase order looks again: a still-low variant reorders."""
        if any(stock.available <= REORDER_THRESHOLD for stock in self.stock.values()):
            self.falls += 1

    def _moved(self, before: int, after: int) -> None:
        """Available stock changed: a fall to the threshold or below enqueues a reorder."""
        self.lowest_available = min(self.lowest_available, after)
        if before > REORDER_THRESHOLD >= after:
            self.falls += 1

    def _assert_reservation(self, body: dict[str, Any], reference: str) -> None:
        held = self.held[reference]
        assert body["reference"] == reference
        assert body["variantId"] == self._variant(held.size)
        assert (body["quantity"], body["status"]) == (held.quantity, held.status), body
        assert body["availableQuantity"] == self.stock[held.size].available, body

    # Rules -----------------------------------------------------------------------------------

    @initialize()
    def fresh_catalog(self) -> None:
        self.catalog = create_seed_catalog(
            self.platform,
            bundle=dict.fromkeys(SIZES, UNITS_IN_BUNDLE),
            stock=dict.fromkeys(SIZES, INITIAL_STOCK),
            max_stock_level=MAX_STOCK_LEVEL,
            reorder_threshold=REORDER_THRESHOLD,
        )
        self.stock = {size: Stock(INITIAL_STOCK) for size in SIZES}

    @rule(target=reservations, size=st.sampled_from(SIZES), quantity=st.integers(1, 6))
    def reserve(self, size: str, quantity: int):
        reference = f"prop:{uuid.uuid4().hex}"
        response = self._post(
            "/api/reservations",
            {"reference": reference, "variantId": self._variant(size), "quantity": quantity},
        )
        stock = self.stock[size]
        if quantity > stock.available:
            assert_problem(response, 409, "insufficient_stock")
            event("reserve: insufficient_stock")
            return multiple()
        assert response.status_code == 201, response.text
        before = stock.available
        stock.reserved += quantity
        self._moved(before, stock.available)
        self.held[reference] = Held(size, quantity)
        self._assert_reservation(response.json(), reference)
        return reference

    @rule(reference=reservations)
    def replay(self, reference: str) -> None:
        held = self.held[reference]
        body = {"reference": reference, "variantId": self._variant(held.size)}
        response = self._post("/api/reservations", {**body, "quantity": held.quantity})
        assert response.status_code == 200, response.text
        self._assert_reservation(response.json(), reference)
        self._assert_reservation(self._get(f"/api/reservations/{reference}"), reference)

    @rule(reference=reservations)
    def release(self, reference: str) -> None:
        held = self.held[reference]
        response = self._post(f"/api/reservations/{reference}/release")
        if held.status == "deducted":
            assert_problem(response, 409, "reservation_deducted")
            event("release: reservation_deducted")
            return
        assert response.status_code == 200, response.text
        if held.status == "reserved":
            held.status = "released"
            self.stock[held.size].reserved -= held.quantity
        self._assert_reservation(response.json(), reference)

    @rule(reference=reservations)
    def deduct(self, reference: str) -> None:
        held = self.held[reference]
        response = self._post(f"/api/reservations/{reference}/deduct")
        if held.status == "released":
            assert_problem(response, 409, "reservation_released")
            event("deduct: reservation_released")
            return
        if held.status == "reserved" and self.stock[held.size].on_hand < held.quantity:
            assert_problem(response, 409, "stock_short")
            event("deduct: stock_short")
            return
        assert response.status_code == 200, response.text
        if held.status == "reserved":
            held.status = "deducted"
            self.stock[held.size].on_hand -= held.quantity
            self.stock[held.size].reserved -= held.quantity
        self._assert_reservation(response.json(), reference)

    @rule(size=st.sampled_from(SIZES), delta=st.integers(-10, 10).filter(bool))
    def adjust(self, size: str, delta: int) -> None:
        stock = self.stock[size]
        response = self._post(
            f"/api/inventory/{self._variant(size)}/adjustments",
            {"delta": delta, "reason": "stock count"},
        )
        if stock.on_hand + delta < 0:
            assert_problem(response, 409, "adjustment_below_zero")
            event("adjust: adjustment_below_zero")
            return
        if stock.on_hand + delta < stock.reserved:
            event("adjust: stock now short of reservations")
        assert response.status_code == 200, response.text
        before = stock.available
        stock.on_hand += delta
        self._moved(before, stock.available)
        body = response.json()
        assert (body["quantity"], body["reservedQuantity"]) == (stock.on_hand, stock.reserved)

    @precondition(_reorder_due)
    @rule(target=closed_orders)
    def receive_open_purchase_order(self):
        order = self._open_order()
        if order is None:
            event("receive: no open purchase order")
            return multiple()
        response = self._post(f"/api/purchase-orders/{order['id']}/receive")
        assert response.status_code == 200, response.text
        received = response.json()
        assert received["status"] == "received"
        assert received["lines"] == order["lines"]
        for line in received["lines"]:
            stock = self.stock[self._size_of(line["variantId"])]
            available = stock.available + line["quantity"]
            surplus = min(line["quantity"], max(0, available - MAX_STOCK_LEVEL))
            stock.on_hand += line["quantity"] - surplus
            stock.surplus += surplus
            if surplus:
                event("receive: surplus")
        self.order_status[order["id"]] = "received"
        self._recheck_reorder()
        event("receive: received")
        return order["id"]

    @precondition(_reorder_due)
    @rule(target=closed_orders)
    def cancel_open_purchase_order(self):
        order = self._open_order()
        if order is None:
            return multiple()
        response = self._post(f"/api/purchase-orders/{order['id']}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        self.order_status[order["id"]] = "cancelled"
        self._recheck_reorder()
        event("cancel: cancelled")
        return order["id"]

    @rule(order_id=closed_orders)
    def receive_closed_purchase_order(self, order_id: str) -> None:
        """Receiving again changes nothing; a cancelled order cannot be received."""
        response = self._post(f"/api/purchase-orders/{order_id}/receive")
        if self.order_status[order_id] == "cancelled":
            assert_problem(response, 409, "invalid_status")
        else:
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "received"

    # Invariants ------------------------------------------------------------------------------

    @invariant()
    def stock_matches_model(self) -> None:
        if self.catalog is None:
            return
        [product] = self._get("/api/inventory", productId=self.catalog.product_id)
        rows = {self._size_of(row["variantId"]): row for row in product["variants"]}
        assert set(rows) == set(SIZES)
        for size, row in rows.items():
            model = self.stock[size]
            actual = (
                row["quantity"],
                row["reservedQuantity"],
                row["availableQuantity"],
                row["surplusQuantity"],
            )
            expected = (model.on_hand, model.reserved, model.available, model.surplus)
            assert actual == expected, (size, row)
            assert row["availableQuantity"] == row["quantity"] - row["reservedQuantity"], row
            # Available falls below zero only when counted stock was lost after it was promised.
            assert row["quantity"] >= 0 and row["reservedQuantity"] >= 0, row
            assert row["status"] == expected_status(model.available), (size, row)
            assert (row["maxStockLevel"], row["reorderThreshold"]) == (
                MAX_STOCK_LEVEL,
                REORDER_THRESHOLD,
            )
        ranks = ["in_stock", "low_stock", "out_of_stock"]
        assert product["status"] == max((row["status"] for row in rows.values()), key=ranks.index)

    @invariant()
    def ledger_is_consistent(self) -> None:
        if self.catalog is None:
            return
        checks = self._get("/api/inventory/ledger-check", productId=self.catalog.product_id)
        assert len(checks) == len(SIZES)
        for check in checks:
            assert check["consistent"], check
            model = self.stock[self._size_of(check["variantId"])]
            assert (
                check["ledgerQuantity"],
                check["ledgerReserved"],
                check["ledgerSurplus"],
            ) == (model.on_hand, model.reserved, model.surplus), check

    @invariant()
    def purchase_orders_are_whole_bundles_one_open_at_a_time(self) -> None:
        if self.catalog is None:
            return
        orders = self._purchase_orders()
        open_orders = [o for o in orders if o["status"] in OPEN_STATUSES]
        assert len(open_orders) <= 1, open_orders
        for order in orders:
            assert order["reason"] == "auto_reorder"
            assert order["status"] == self.order_status.get(order["id"], "open"), order
            assert order["bundles"] >= 1
            # Enough bundles to lift the emptiest variant just above its threshold, and no more.
            deepest = REORDER_THRESHOLD - self.lowest_available + 1
            assert order["bundles"] <= math.ceil(deepest / UNITS_IN_BUNDLE)
            assert {line["variantId"]: line["quantity"] for line in order["lines"]} == {
                variant_id: UNITS_IN_BUNDLE * order["bundles"]
                for variant_id in self.catalog.variants.values()
            }


def test_warehouse_model(platform: Platform) -> None:
    run_state_machine_as_test(
        lambda: WarehouseMachine(platform),
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
