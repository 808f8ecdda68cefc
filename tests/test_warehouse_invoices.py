"""Warehouse invoices (the seed's `warehouse_invoices`): one per received purchase order, with
its goods at unit cost, inbound shipping and PPN; paid by an admin, which posts a balanced entry
in settlement-service's ledger once."""

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from laku.testing.catalog import create_seed_catalog, created
from laku.testing.platform import Platform, bearer
from tests.group_buys import purchase_orders_of
from tests.support import admin_headers, assert_problem, eventually, snapshot

INVOICES = "/api/warehouse-invoices"


def _factory_staff(platform: Platform, factory_id: str) -> dict[str, str]:
    email = f"keuangan-{uuid.uuid4().hex[:8]}@laku.id"
    created(
        platform.client("factory").post(
            f"/api/factories/{factory_id}/users",
            json={"email": email, "password": "factory-password", "name": "Keuangan Pabrik"},
            headers=admin_headers(platform),
        )
    )
    return bearer(platform.login(email, "factory-password"))


def _invoices(platform: Platform, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    response = platform.client("warehouse").get(INVOICES, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _ledger_lines(platform: Platform, invoice_id: str) -> dict[str, tuple[int, int]]:
    rows = platform.sql(
        "SELECT l.account, l.debit, l.credit FROM settlement.transaction_ledger_lines l"
        " JOIN settlement.transaction_ledger e ON e.id = l.entry_id"
        " WHERE e.reference = $1 AND e.kind = 'warehouse_invoice_paid'",
        f"warehouse-invoice:{invoice_id}",
    )
    return {row["account"]: (row["debit"], row["credit"]) for row in rows}


def test_a_received_purchase_order_is_invoiced_then_paid_into_the_ledger(
    platform: Platform,
) -> None:
    """The seed's reorder: one bundle of 4/4/4 at a cost of 80,000 a shirt, 25,000 to ship:
    goods 960,000 + shipping 25,000 = 985,000; PPN 11% = 108,350; total 1,093,350."""
    mine = create_seed_catalog(platform, stock={"S": 3, "M": 8, "L": 8})
    theirs = create_seed_catalog(platform, stock={"S": 3, "M": 8, "L": 8})
    [purchase_order] = eventually(lambda: purchase_orders_of(platform, mine))
    [other_order] = eventually(lambda: purchase_orders_of(platform, theirs))
    admin = admin_headers(platform)
    assert _invoices(platform, admin, purchaseOrderId=purchase_order["id"]) == []

    warehouse = platform.client("warehouse")
    for _ in range(2):  # received twice: invoiced once
        received = warehouse.post(
            f"/api/purchase-orders/{purchase_order['id']}/receive", headers=admin
        )
        assert received.status_code == 200, received.text
    assert warehouse.post(
        f"/api/purchase-orders/{other_order['id']}/receive", headers=admin
    ).is_success
    [invoice] = _invoices(platform, admin, purchaseOrderId=purchase_order["id"])
    assert invoice["number"].startswith("INV-WH-")
    assert (invoice["factoryId"], invoice["groupSessionId"]) == (mine.factory_id, None)
    assert (invoice["units"], invoice["unitCost"]) == (12, 80000)
    figures = ("goodsAmount", "shippingAmount", "taxRateBps", "taxAmount", "totalAmount")
    assert tuple(invoice[name] for name in figures) == (960000, 25000, 1100, 108350, 1093350)
    received_at = datetime.fromisoformat(received.json()["receivedAt"])
    assert date.fromisoformat(invoice["dueDate"]) == (received_at + timedelta(days=30)).date()
    assert (invoice["status"], invoice["paymentReference"], invoice["paidAt"]) == (
        "pending",
        None,
        None,
    )

    # The factory sees its own invoices only, and cannot pay.
    staff = _factory_staff(platform, mine.factory_id)
    assert [i["id"] for i in _invoices(platform, staff)] == [invoice["id"]]
    [theirs_invoice] = _invoices(platform, admin, purchaseOrderId=other_order["id"])
    assert_problem(warehouse.get(f"{INVOICES}/{theirs_invoice['id']}", headers=staff), 404)
    pay = f"{INVOICES}/{invoice['id']}/pay"
    before = snapshot(platform, "warehouse")
    assert_problem(warehouse.post(pay, json={"paymentReference": "X"}, headers=staff), 403)
    assert snapshot(platform, "warehouse") == before

    paid = warehouse.post(pay, json={"paymentReference": "BCA-TRF-0001"}, headers=admin)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["paymentReference"]) == ("paid", "BCA-TRF-0001")
    again = warehouse.post(pay, json={"paymentReference": "BCA-TRF-0001"}, headers=admin)
    assert again.json() == paid.json()
    before = snapshot(platform, "warehouse")
    other = warehouse.post(pay, json={"paymentReference": "BCA-TRF-0002"}, headers=admin)
    assert_problem(other, 409, "invoice_already_paid")
    assert snapshot(platform, "warehouse") == before
    assert [i["id"] for i in _invoices(platform, admin, status="paid")].count(invoice["id"]) == 1

    # One balanced entry: goods and shipping into inventory, PPN as input tax, cash out.
    lines = eventually(lambda: _ledger_lines(platform, invoice["id"]))
    assert lines == {
        "inventory": (985000, 0),
        "ppn_input": (108350, 0),
        "cash_bank": (0, 1093350),
    }
    assert _ledger_lines(platform, theirs_invoice["id"]) == {}  # not paid


def test_invoice_refusals_change_nothing(platform: Platform) -> None:
    buyer = platform.new_buyer()
    warehouse = platform.client("warehouse")
    assert_problem(warehouse.get(INVOICES), 401)
    assert_problem(warehouse.get(INVOICES, headers=buyer.headers), 403)
    before = snapshot(platform, "warehouse")
    missing = f"{INVOICES}/{uuid.uuid4()}/pay"
    body = {"paymentReference": "BCA-1"}
    assert_problem(warehouse.post(missing, json=body, headers=admin_headers(platform)), 404)
    assert_problem(
        warehouse.post(missing, json={"paymentReference": ""}, headers=admin_headers(platform)), 422
    )
    assert snapshot(platform, "warehouse") == before
