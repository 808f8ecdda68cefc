"""settlement-service closes its loops, over the real processes: an order cancelled after its
factory was settled for it becomes a receivable the factory's next settlements net out (what
one cannot cover is carried to the next, a payout is never negative); one cancelled before its
period is settled is simply left out of that settlement's total; and a failed payout is paid
again, with a new payout, when an admin retries it.

One factory sells the seed's T-shirt in group buys one after the other; each group's escrow is
released in its own period ([start, end), each starting where the last ended).
"""

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Platform
from tests.group_buys import (
    Joined,
    session_orders,
)
from tests.settlements import (
    PAYOUT_ACCOUNT,
    SETTLEMENTS,
    Group,
    assert_ledger_balanced,
    get_settlement,
    ledger_account,
    ledger_balances,
    payout_id_of,
    post_settlement,
    set_payout_account,
    settlement_becomes,
    settlements_client,
    successful_group_in_period,
)
from tests.support import admin_headers, assert_problem, eventually, ok, snapshot


def _order_of(platform: Platform, group: Group, joined: Joined) -> dict[str, Any]:
    [order] = [
        o for o in session_orders(platform, group.session_id) if o["userId"] == joined.buyer.id
    ]
    return order


def _cancel_refunded(platform: Platform, group: Group, joined: Joined) -> dict[str, Any]:
    """An admin cancels the buyer's order; returns it once its refund is made."""
    order = _order_of(platform, group, joined)
    cancelled = platform.client("order").post(
        f"/api/orders/{order['id']}/cancel",
        json={"reason": "Buyer asked before shipping"},
        headers=admin_headers(platform),
    )
    assert cancelled.status_code == 200, cancelled.text

    def refunded() -> dict[str, Any] | None:
        now = _order_of(platform, group, joined)
        return now if now["status"] == "refunded" else None

    refunded_order = eventually(refunded, timeout=30.0, every=0.2)
    assert refunded_order, _order_of(platform, group, joined)
    return refunded_order


def _receivable(platform: Platform, factory_id: str) -> tuple[int, int]:
    return ledger_account(ledger_balances(platform), f"factory_receivable:{factory_id}")


def _receivable_becomes(platform: Platform, factory_id: str, debit: int) -> None:
    """payment-service's report reaches settlement-service through its outbox."""
    reached = eventually(
        lambda: _receivable(platform, factory_id)[0] == debit, timeout=30.0, every=0.2
    )
    assert reached, _receivable(platform, factory_id)


def _escrow_refund(platform: Platform, refund_reference: str) -> dict[str, Any] | None:
    """How settlement-service accounted for the payment refund with that reference."""
    [refund] = platform.sql("SELECT id FROM payment.refunds WHERE reference = $1", refund_reference)
    rows = platform.sql(
        "SELECT status, settlement_id FROM settlement.escrow_refunds WHERE refund_id = $1",
        refund["id"],
    )
    return dict(rows[0]) if rows else None


def _preview(platform: Platform, factory_id: str, group: Group) -> dict[str, Any]:
    return ok(
        settlements_client(platform).get(
            f"{SETTLEMENTS}/preview",
            params=group.body(factory_id),
            headers=admin_headers(platform),
        )
    )


def _figures(settlement: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (
        settlement["totalAmount"],
        settlement["platformFee"],
        settlement["receivableDeducted"],
        settlement["receivableCarried"],
        settlement["netAmount"],
    )


def _entry_lines(entry: dict[str, Any]) -> list[tuple[str, int, int]]:
    return sorted((line["account"], line["debit"], line["credit"]) for line in entry["lines"])


def _fee(total: int) -> int:
    return (total * 500 + 5_000) // 10_000  # 5%, half up


def test_refunds_after_settlement_are_netted_out_of_the_next_settlements(
    platform: Platform,
) -> None:
    admin = admin_headers(platform)
    sandbox = platform.client("xendit-sandbox")
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    factory = catalog.factory_id
    receivable = f"factory_receivable:{factory}"
    payable = f"factory_payable:{factory}"
    ok(set_payout_account(platform, factory, admin))

    # Period A: the seed's group (two buyers of 2 Small shirts, 2,500,000 each), settled and paid.
    first = datetime.now(UTC)
    group_a = successful_group_in_period(platform, catalog, first, "S", 4, [2, 2])
    settled_a = ok(post_settlement(platform, group_a.body(factory), admin), 201)
    assert _figures(settled_a) == (5_000_000, 250_000, 0, 0, 4_750_000)
    ok(sandbox.post(f"/sandbox/payouts/{payout_id_of(platform, settled_a['id'])}/succeed"))
    settlement_becomes(platform, settled_a["id"], "paid")

    # A buyer's order is cancelled after that: 2,500,000 went back to the buyer's wallet from
    # escrow the factory has been paid for. The factory owes it back.
    cancelled = _cancel_refunded(platform, group_a, group_a.joined[0])
    assert cancelled["subtotal"] == 2_500_000
    _receivable_becomes(platform, factory, 2_500_000)
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, receivable) == (2_500_000, 0)
    accounted = _escrow_refund(platform, f"order:{cancelled['id']}:cancelled")
    assert accounted == {"status": "receivable", "settlement_id": uuid.UUID(settled_a["id"])}
    entries = ok(get_settlement(platform, settled_a["id"], admin))["ledgerEntries"]
    [receivable_entry] = [e for e in entries if e["kind"] == "factory_receivable"]
    assert _entry_lines(receivable_entry) == [
        ("escrow_released", 0, 2_500_000),
        (receivable, 2_500_000, 0),
    ]
    # Period A's figures are what they were: the settlement is not redone.
    assert ok(get_settlement(platform, settled_a["id"], admin))["netAmount"] == 4_750_000

    # Period B: one buyer of 4 Small shirts, 5,000,000. Net = total - fee - receivable.
    group_b = successful_group_in_period(platform, catalog, group_a.end, "S", 4, [4])
    preview_b = _preview(platform, factory, group_b)
    assert _figures(preview_b) == (5_000_000, 250_000, 2_500_000, 0, 2_250_000)
    settled_b = ok(
        post_settlement(platform, {**group_b.body(factory), "netAmount": 2_250_000}, admin), 201
    )
    assert _figures(settled_b) == _figures(preview_b)
    [entry_b] = settled_b["ledgerEntries"]
    assert _entry_lines(entry_b) == [
        ("escrow_released", 5_000_000, 0),
        (payable, 0, 2_250_000),
        (receivable, 0, 2_500_000),
        ("platform_fee_revenue", 0, 250_000),
    ]
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, receivable) == (2_500_000, 2_500_000)  # nothing owed back
    payout_b = payout_id_of(platform, settled_b["id"])
    [made_b] = [p for p in ok(sandbox.get("/sandbox/payouts")) if p["id"] == payout_b]
    assert made_b["amount"] == 2_250_000
    ok(sandbox.post(f"/sandbox/payouts/{payout_b}/succeed"))
    settlement_becomes(platform, settled_b["id"], "paid")

    # Period B's whole order is cancelled after its settlement: 5,000,000 owed back.
    _cancel_refunded(platform, group_b, group_b.joined[0])
    _receivable_becomes(platform, factory, 7_500_000)

    # Period C: two buyers of 1 Medium shirt (1,250,000 each at the last tier); one of them
    # cancels before period C is settled, so C's total leaves that order out (no receivable).
    group_c = successful_group_in_period(platform, catalog, group_b.end, "M", 2, [1, 1])
    before_settling = _cancel_refunded(platform, group_c, group_c.joined[1])
    reference_c = f"order:{before_settling['id']}:cancelled"
    reported = eventually(lambda: _escrow_refund(platform, reference_c), timeout=30.0)
    assert reported == {"status": "pending", "settlement_id": None}
    total_c = 1_250_000
    fee_c = _fee(total_c)
    preview_c = _preview(platform, factory, group_c)
    # The receivable (5,000,000) is bigger than what C leaves after its fee: C pays nothing
    # and carries the rest.
    assert _figures(preview_c) == (
        total_c,
        fee_c,
        total_c - fee_c,
        5_000_000 - (total_c - fee_c),
        0,
    )
    settled_c = ok(post_settlement(platform, group_c.body(factory), admin), 201)
    assert _figures(settled_c) == _figures(preview_c)
    assert (settled_c["status"], settled_c["payoutId"]) == ("paid", None)
    assert _escrow_refund(platform, reference_c) == {
        "status": "netted",
        "settlement_id": uuid.UUID(settled_c["id"]),
    }
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, receivable) == (7_500_000, 2_500_000 + total_c - fee_c)
    assert ledger_account(balances, payable) == (4_750_000 + 2_250_000, 4_750_000 + 2_250_000)

    # The report of C's refund, delivered again, changes nothing.
    [refund_c] = platform.sql(
        "SELECT r.id, r.payment_id, r.amount, p.escrow_released_at FROM payment.refunds r "
        "JOIN payment.payments p ON p.id = r.payment_id WHERE r.reference = $1",
        reference_c,
    )
    token = platform.service_token("payment")
    before = snapshot(platform, "settlement")
    again = settlements_client(platform).post(
        f"{SETTLEMENTS}/escrow-refunds",
        json={
            "refunds": [
                {
                    "refundId": str(refund_c["id"]),
                    "paymentId": str(refund_c["payment_id"]),
                    "factoryId": factory,
                    "amount": refund_c["amount"],
                    "escrowReleasedAt": refund_c["escrow_released_at"].isoformat(),
                }
            ]
        },
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
    )
    assert [(r["status"], r["settlementId"]) for r in ok(again)["refunds"]] == [
        ("netted", settled_c["id"])
    ]
    assert snapshot(platform, "settlement") == before
    # Only services report refunds.
    assert_problem(
        settlements_client(platform).post(
            f"{SETTLEMENTS}/escrow-refunds", json={"refunds": []}, headers=admin
        ),
        403,
    )

    # Period D: the rest of what the factory owes (5,000,000 - 1,192,250) comes off next.
    carried = settled_c["receivableCarried"]
    group_d = successful_group_in_period(platform, catalog, group_c.end, "L", 4, [4])
    total_d = 4 * 1_250_000
    settled_d = ok(post_settlement(platform, group_d.body(factory), admin), 201)
    fee_d = _fee(total_d)
    assert _figures(settled_d) == (total_d, fee_d, carried, 0, total_d - fee_d - carried)
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, receivable) == (7_500_000, 7_500_000)
    payout_d = payout_id_of(platform, settled_d["id"])
    # One payout for each settlement that paid something, of its net; none for C.
    payouts = ok(sandbox.get("/sandbox/payouts"))
    for settlement in (settled_a, settled_b, settled_c, settled_d):
        made = [p for p in payouts if p["reference_id"] == f"settlement-{settlement['id']}"]
        expected = [settlement["netAmount"]] if settlement["netAmount"] else []
        assert [p["amount"] for p in made] == expected, settlement["id"]
    assert [p["id"] for p in payouts if p["reference_id"] == f"settlement-{settled_d['id']}"] == [
        payout_d
    ]
    # The audit (design 15) agrees: each total = escrow released now + its receivables since.
    audit = ok(platform.client("settlement").get("/api/admin/audit", headers=admin))
    [check] = [
        i for i in audit["invariants"] if i["name"] == "settlement.totals_match_released_escrow"
    ]
    assert check["ok"], check
    assert check["figures"]["receivable"] >= 7_500_000


# Retrying a failed payout -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failed_settlement(platform: Platform) -> dict[str, Any]:
    """A settlement (one Small shirt, 1,250,000: net 1,187,500) whose payout failed."""
    admin = admin_headers(platform)
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    ok(set_payout_account(platform, catalog.factory_id, admin))
    group = successful_group_in_period(platform, catalog, datetime.now(UTC), "S", 1, [1])
    settlement = ok(post_settlement(platform, group.body(catalog.factory_id), admin), 201)
    failed = platform.client("xendit-sandbox").post(
        f"/sandbox/payouts/{payout_id_of(platform, settlement['id'])}/fail",
        params={"failureCode": "INVALID_DESTINATION"},
    )
    ok(failed)
    return settlement_becomes(platform, settlement["id"], "payout_failed")


def _retry(platform: Platform, settlement_id: str, **headers: str) -> httpx.Response:
    return settlements_client(platform).post(
        f"{SETTLEMENTS}/{settlement_id}/retry-payout", headers=headers or admin_headers(platform)
    )


def test_a_failed_payout_is_paid_again_once_when_an_admin_retries_it(
    platform: Platform, failed_settlement: dict[str, Any]
) -> None:
    admin = admin_headers(platform)
    sandbox = platform.client("xendit-sandbox")
    settlement_id = failed_settlement["id"]
    factory = failed_settlement["factoryId"]
    payable = f"factory_payable:{factory}"
    failed_payout = failed_settlement["payoutId"]
    assert failed_settlement["payoutAttempt"] == 1

    # Only admins retry, and only a failed payout.
    before = snapshot(platform, "settlement")
    buyer = platform.new_buyer().headers
    assert_problem(_retry(platform, settlement_id, **buyer), 403)
    assert_problem(_retry(platform, str(uuid.uuid4())), 404, "settlement_not_found")
    assert snapshot(platform, "settlement") == before

    # The account was wrong: the admin corrects it, then retries.
    corrected = {"accountNumber": "8720099999", "accountHolderName": "PT Konveksi Maju Jaya"}
    ok(set_payout_account(platform, factory, admin, **corrected))
    key = {"Idempotency-Key": f"retry:{settlement_id}"}
    retried = ok(_retry(platform, settlement_id, **admin, **key))
    assert (retried["status"], retried["payoutAttempt"], retried["payoutFailureCode"]) == (
        "pending",
        2,
        None,
    )
    assert (retried["accountNumber"], retried["accountHolderName"]) == (
        corrected["accountNumber"],
        corrected["accountHolderName"],
    )
    [kept] = retried["failedPayouts"]
    assert (kept["attempt"], kept["payoutId"], kept["failureCode"], kept["accountNumber"]) == (
        1,
        failed_payout,
        "INVALID_DESTINATION",
        PAYOUT_ACCOUNT["accountNumber"],
    )
    # The same request again answers the first response; a retry while pending is refused.
    replay = _retry(platform, settlement_id, **admin, **key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["payoutAttempt"] == 2
    assert_problem(_retry(platform, settlement_id), 409, "payout_not_failed")

    # A new payout, with its own reference and key, to the corrected account.
    new_payout = payout_id_of(platform, settlement_id)
    assert new_payout != failed_payout
    payouts = {p["id"]: p for p in ok(sandbox.get("/sandbox/payouts"))}
    made = payouts[new_payout]
    assert (made["reference_id"], made["amount"], made["status"]) == (
        f"settlement-{settlement_id}-2",
        1_187_500,
        "ACCEPTED",
    )
    assert made["channel_properties"]["account_number"] == corrected["accountNumber"]
    assert payouts[failed_payout]["status"] == "FAILED"
    ok(sandbox.post(f"/sandbox/payouts/{new_payout}/succeed"))
    paid = settlement_becomes(platform, settlement_id, "paid")
    assert [e["kind"] for e in paid["ledgerEntries"]] == ["settlement", "settlement_payout"]
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, payable) == (1_187_500, 1_187_500)
    # Two payouts were ever asked for, one failed and one paid: the factory was paid once.
    mine = [
        p
        for p in ok(sandbox.get("/sandbox/payouts"))
        if p["reference_id"].startswith(f"settlement-{settlement_id}")
    ]
    assert sorted(p["status"] for p in mine) == ["FAILED", "SUCCEEDED"]
    assert_problem(_retry(platform, settlement_id), 409, "payout_not_failed")


def test_a_refund_reported_while_settlement_is_down_is_not_lost(platform: Platform) -> None:
    """payment-service reports the refund from its outbox until settlement-service takes it."""
    admin = admin_headers(platform)
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    factory = catalog.factory_id
    ok(set_payout_account(platform, factory, admin))
    group = successful_group_in_period(platform, catalog, datetime.now(UTC), "S", 1, [1])
    settled = ok(post_settlement(platform, group.body(factory), admin), 201)
    assert settled["netAmount"] == 1_187_500

    platform.supervisor.stop("settlement")
    try:
        cancelled = _cancel_refunded(platform, group, group.joined[0])
        [refund] = platform.sql(
            "SELECT id FROM payment.refunds WHERE reference = $1",
            f"order:{cancelled['id']}:cancelled",
        )

        def tried() -> bool:
            [row] = platform.sql(
                "SELECT attempts, delivered_at FROM payment.outbox "
                "WHERE kind = 'report_escrow_refunds' AND payload->'refunds'->0->>'refundId' = $1",
                str(refund["id"]),
            )
            return row["attempts"] > 0 and row["delivered_at"] is None

        assert eventually(tried, timeout=30.0)  # tried while settlement-service is down
    finally:
        platform.supervisor.start_one("settlement")
        platform.supervisor.wait_ready()

    _receivable_becomes(platform, factory, 1_250_000)
    assert _escrow_refund(platform, f"order:{cancelled['id']}:cancelled") == {
        "status": "receivable",
        "settlement_id": uuid.UUID(settled["id"]),
    }
    assert_ledger_balanced(platform)
