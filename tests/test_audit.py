"""`laku audit` (design 15): after a real flow the audit finds nothing; each invariant broken in
the database on its own is reported, with its offender, and the exit code is 1.

The flow: buyers join and pay through the Xendit sandbox; one group buy closes with tier
refunds and its escrow is settled to the factory; another is cancelled (a paid buyer refunded,
an unpaid join released); a third stays open with a paid and an unpaid join; one withdrawal is
paid out, another fails and is given back. Each break is undone before the next.
"""

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from laku.testing.catalog import SeedCatalog, create_seed_catalog
from laku.testing.database import plain_url
from laku.testing.platform import Account, Platform, bearer
from tests.audits import AUDIT_WAIT, laku_audit, quiet_audit, run_laku_audit
from tests.group_buys import Joined, close_group_buy, end_now, join_group_buy, open_group_buy
from tests.support import balance, eventually, ok


@pytest.fixture(scope="module")
def platform(own_platform: Platform) -> Platform:
    """The whole platform is audited: a platform of this module's own."""
    return own_platform


WITHDRAWALS = "/api/wallets/me/withdrawals"


@dataclass(frozen=True)
class Audited:
    """What the flow left behind, for the tests to break."""

    catalog: SeedCatalog
    closed: Joined  # paid, tier-refunded, escrow released and settled
    cancelled_session: str
    open_session: str
    open_paid: Joined
    open_unpaid: Joined
    failed_withdrawal: str
    settlement: str


def _withdraw(platform: Platform, buyer: Account, amount: int, outcome: str) -> str:
    """A withdrawal whose payout the Xendit sandbox settles as `outcome` (succeed or fail)."""
    response = platform.client("wallet").post(
        WITHDRAWALS,
        json={
            "amount": amount,
            "bankCode": "BCA",
            "accountNumber": "1234567890",
            "accountHolderName": "Siti Rahayu",
        },
        headers=buyer.headers,
    )
    assert response.status_code == 201, response.text
    withdrawal_id = response.json()["id"]

    def withdrawal() -> dict[str, Any]:
        return ok(
            platform.client("wallet").get(f"{WITHDRAWALS}/{withdrawal_id}", headers=buyer.headers)
        )

    payout = eventually(lambda: withdrawal()["payoutId"], timeout=AUDIT_WAIT)
    assert payout, "the payout was never requested"
    ok(platform.client("xendit-sandbox").post(f"/sandbox/payouts/{payout}/{outcome}"))
    settled = "succeeded" if outcome == "succeed" else "failed"
    assert eventually(lambda: withdrawal()["status"] == settled, timeout=AUDIT_WAIT)
    return withdrawal_id


def _settle(platform: Platform, catalog: SeedCatalog, since: datetime) -> str:
    admin = bearer(platform.admin_token)
    ok(
        platform.client("settlement").put(
            f"/api/settlements/payout-accounts/{catalog.factory_id}",
            json={"bankCode": "BCA", "accountNumber": "1234567890", "accountHolderName": "Budi"},
            headers=admin,
        )
    )
    period = {
        "factoryId": catalog.factory_id,
        "periodStart": since.isoformat(),
        "periodEnd": datetime.now(UTC).isoformat(),
    }
    response = platform.client("settlement").post("/api/settlements", json=period, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def audited(platform: Platform) -> Audited:
    started = datetime.now(UTC) - timedelta(seconds=5)
    admin = bearer(platform.admin_token)
    catalog = create_seed_catalog(platform, reorder_threshold=0)

    # Closed with tier refunds (seed "Tier Refund Calculation"): 95,000 -> 65,000 a unit.
    session = open_group_buy(platform, catalog, target_moq=8)
    first = join_group_buy(platform, session, catalog.variants["S"], 5, pay=True)
    second = join_group_buy(platform, session, catalog.variants["M"], 3, pay=True)
    join_group_buy(platform, session, catalog.variants["L"], 1, pay=False)
    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"], timeout=AUDIT_WAIT)["status"] == "success"
    assert eventually(lambda: balance(platform, first.buyer) == 150_000, timeout=AUDIT_WAIT)
    assert eventually(lambda: balance(platform, second.buyer) == 60_000, timeout=AUDIT_WAIT)

    # Cancelled by an admin: the paid join refunded in full, the unpaid one released.
    cancelled = open_group_buy(platform, catalog, target_moq=100)
    refunded = join_group_buy(platform, cancelled, catalog.variants["S"], 1, pay=True)
    join_group_buy(platform, cancelled, catalog.variants["M"], 1, pay=False)
    ok(
        platform.client("group-buying").post(
            f"/api/group-buying/{cancelled['id']}/cancel", headers=admin
        )
    )
    assert eventually(lambda: balance(platform, refunded.buyer) == 95_000, timeout=AUDIT_WAIT)

    # Open, ending tomorrow (after this module): a paid join and one still to pay.
    still_open = open_group_buy(platform, catalog, target_moq=100)
    platform.sql(
        "UPDATE group_buying.group_buying_sessions SET end_time = now() + interval '1 day' "
        "WHERE id = $1",
        uuid.UUID(still_open["id"]),
    )
    open_paid = join_group_buy(platform, still_open, catalog.variants["L"], 2, pay=True)
    open_unpaid = join_group_buy(platform, still_open, catalog.variants["M"], 1, pay=False)

    _withdraw(platform, first.buyer, 50_000, "succeed")
    failed = _withdraw(platform, second.buyer, 20_000, "fail")
    assert eventually(lambda: balance(platform, second.buyer) == 60_000, timeout=AUDIT_WAIT)
    settlement = _settle(platform, catalog, started)

    return Audited(
        catalog=catalog,
        closed=first,
        cancelled_session=cancelled["id"],
        open_session=still_open["id"],
        open_paid=open_paid,
        open_unpaid=open_unpaid,
        failed_withdrawal=failed,
        settlement=settlement,
    )


def _run_script(platform: Platform, script: str) -> None:
    """Several statements in one transaction (asyncpg's simple protocol)."""

    async def execute() -> None:
        conn = await asyncpg.connect(plain_url(platform.database_url))
        try:
            await conn.execute(script)
        finally:
            await conn.close()

    asyncio.run(execute())


def test_after_a_real_flow_the_audit_finds_nothing(platform: Platform, audited: Audited) -> None:
    report = quiet_audit(platform)
    figures = {i["name"]: i["figures"] for i in report["invariants"]}

    code, verdicts, output = laku_audit(platform)

    assert code == 0, output
    assert set(verdicts.values()) == {"ok"}, output
    assert (
        set(verdicts)
        == set(figures)
        == {
            "group_buying.paid_quantity_matches_participants",
            "warehouse.stock_matches_ledger",
            "warehouse.reserved_matches_holds",
            "payment.paid_is_held_released_refunded",
            "wallet.balance_is_sum_of_transactions",
            "wallet.withdrawals_debited_and_reversed_once",
            "settlement.ledger_entries_balanced",
            "participants.hold_in_warehouse",
            "participants.payment_in_payment",
            "wallet.refund_credits_trace_to_refunds",
            "settlement.totals_match_released_escrow",
        }
    )
    # What this flow added is in the figures (the platform may hold other tests' data too).
    assert figures["participants.hold_in_warehouse"]["paid"] >= 3  # two closed, one open
    assert figures["participants.hold_in_warehouse"]["pendingPayment"] >= 1
    assert figures["wallet.refund_credits_trace_to_refunds"]["refunds"] >= 3
    assert figures["wallet.withdrawals_debited_and_reversed_once"]["failedWithdrawals"] >= 1
    assert figures["settlement.totals_match_released_escrow"]["settlements"] >= 1
    assert "ok        payment.paid_is_held_released_refunded: payments " in output


@dataclass(frozen=True)
class Breakage:
    """SQL that breaks invariants, the SQL that undoes it, and what the audit must report."""

    breaks: str
    restores: str
    reported: frozenset[str]
    offender: str


def _breakages(a: Audited) -> dict[str, Breakage]:
    small = a.catalog.variants["S"]
    open_paid = f"participant:{a.open_paid.id}"
    open_unpaid = f"participant:{a.open_unpaid.id}"
    closed = f"participant:{a.closed.id}"
    forged_refund = uuid.uuid4()
    return {
        "stock_off_its_ledger": Breakage(
            f"UPDATE warehouse.warehouse_inventory SET quantity = quantity + 1 "
            f"WHERE variant_id = '{small}'",
            f"UPDATE warehouse.warehouse_inventory SET quantity = quantity - 1 "
            f"WHERE variant_id = '{small}'",
            frozenset({"warehouse.stock_matches_ledger"}),
            small,
        ),
        "unpaid_join_lost_its_hold": Breakage(
            f"UPDATE warehouse.reservations SET status = 'released' "
            f"WHERE reference = '{open_unpaid}'",
            f"UPDATE warehouse.reservations SET status = 'reserved' "
            f"WHERE reference = '{open_unpaid}'",
            frozenset({"warehouse.reserved_matches_holds", "participants.hold_in_warehouse"}),
            a.open_unpaid.id,
        ),
        "paid_join_stock_released": Breakage(
            f"UPDATE warehouse.reservations SET status = 'released' WHERE reference = '{closed}'",
            f"UPDATE warehouse.reservations SET status = 'deducted' WHERE reference = '{closed}'",
            frozenset({"participants.hold_in_warehouse"}),
            a.closed.id,
        ),
        "refunded_amount_without_refund": Breakage(
            f"UPDATE payment.payments SET refunded_amount = refunded_amount + 1000 "
            f"WHERE reference = '{open_paid}'",
            f"UPDATE payment.payments SET refunded_amount = refunded_amount - 1000 "
            f"WHERE reference = '{open_paid}'",
            frozenset({"payment.paid_is_held_released_refunded"}),
            a.open_paid.payment_id,
        ),
        "unpaid_join_payment_expired": Breakage(
            f"UPDATE payment.payments SET status = 'expired', expired_at = now() "
            f"WHERE reference = '{open_unpaid}'",
            f"UPDATE payment.payments SET status = 'pending', expired_at = NULL "
            f"WHERE reference = '{open_unpaid}'",
            frozenset({"participants.payment_in_payment"}),
            a.open_unpaid.id,
        ),
        "wallet_balance_off_its_transactions": Breakage(
            f"UPDATE wallet.user_wallets SET balance = balance + 1000 "
            f"WHERE user_id = '{a.closed.buyer.id}'",
            f"UPDATE wallet.user_wallets SET balance = balance - 1000 "
            f"WHERE user_id = '{a.closed.buyer.id}'",
            frozenset({"wallet.balance_is_sum_of_transactions"}),
            a.closed.buyer.id,
        ),
        "credit_of_no_refund": Breakage(
            # A tier refund credited, balance and all, that payment-service never refunded.
            f"WITH credit AS (INSERT INTO wallet.wallet_transactions (id, user_id, direction, "
            f"amount, reason, reference, idempotency_key, balance_after) SELECT "
            f"gen_random_uuid(), user_id, 'credit', 7000, 'tier_refund', 'forged', "
            f"'refund:{forged_refund}', balance + 7000 FROM wallet.user_wallets "
            f"WHERE user_id = '{a.closed.buyer.id}' RETURNING user_id, amount) "
            f"UPDATE wallet.user_wallets w SET balance = w.balance + credit.amount "
            f"FROM credit WHERE w.user_id = credit.user_id",
            f"WITH forged AS (DELETE FROM wallet.wallet_transactions "
            f"WHERE idempotency_key = 'refund:{forged_refund}' RETURNING user_id, amount) "
            f"UPDATE wallet.user_wallets w SET balance = w.balance - forged.amount "
            f"FROM forged WHERE w.user_id = forged.user_id",
            frozenset({"wallet.refund_credits_trace_to_refunds"}),
            f"refund:{forged_refund}",
        ),
        "withdrawal_not_what_was_debited": Breakage(
            f"UPDATE wallet.wallet_withdrawals SET amount = amount + 1 "
            f"WHERE id = '{a.failed_withdrawal}'",
            f"UPDATE wallet.wallet_withdrawals SET amount = amount - 1 "
            f"WHERE id = '{a.failed_withdrawal}'",
            frozenset({"wallet.withdrawals_debited_and_reversed_once"}),
            a.failed_withdrawal,
        ),
        "unbalanced_ledger_entry": Breakage(
            # Past the deferred trigger that refuses it at commit.
            "BEGIN; ALTER TABLE settlement.transaction_ledger_lines "
            "DISABLE TRIGGER ledger_entry_balanced; "
            "INSERT INTO settlement.transaction_ledger_lines (entry_id, account, debit, credit) "
            f"SELECT id, 'audit_test', 100, 0 FROM settlement.transaction_ledger "
            f"WHERE settlement_id = '{a.settlement}' AND kind = 'settlement'; "
            "ALTER TABLE settlement.transaction_ledger_lines "
            "ENABLE TRIGGER ledger_entry_balanced; COMMIT;",
            "BEGIN; ALTER TABLE settlement.transaction_ledger_lines "
            "DISABLE TRIGGER ledger_append_only; "
            "DELETE FROM settlement.transaction_ledger_lines WHERE account = 'audit_test'; "
            "ALTER TABLE settlement.transaction_ledger_lines "
            "ENABLE TRIGGER ledger_append_only; COMMIT;",
            frozenset({"settlement.ledger_entries_balanced"}),
            "debits",
        ),
        "settlement_total_not_released": Breakage(
            f"UPDATE settlement.factory_settlements SET total_amount = total_amount + 100, "
            f"net_amount = net_amount + 100 WHERE id = '{a.settlement}'",
            f"UPDATE settlement.factory_settlements SET total_amount = total_amount - 100, "
            f"net_amount = net_amount - 100 WHERE id = '{a.settlement}'",
            frozenset({"settlement.totals_match_released_escrow"}),
            a.settlement,
        ),
        "paid_quantity_off_its_participants": Breakage(
            f"UPDATE group_buying.group_buying_sessions SET paid_quantity = paid_quantity + 1 "
            f"WHERE id = '{a.open_session}'",
            f"UPDATE group_buying.group_buying_sessions SET paid_quantity = paid_quantity - 1 "
            f"WHERE id = '{a.open_session}'",
            frozenset({"group_buying.paid_quantity_matches_participants"}),
            a.open_session,
        ),
    }


BREAKAGES = [
    "stock_off_its_ledger",
    "unpaid_join_lost_its_hold",
    "paid_join_stock_released",
    "refunded_amount_without_refund",
    "unpaid_join_payment_expired",
    "wallet_balance_off_its_transactions",
    "credit_of_no_refund",
    "withdrawal_not_what_was_debited",
    "unbalanced_ledger_entry",
    "settlement_total_not_released",
    "paid_quantity_off_its_participants",
]


@pytest.mark.parametrize("name", BREAKAGES)
def test_a_broken_invariant_is_reported_with_its_offender(
    platform: Platform, audited: Audited, name: str
) -> None:
    breakage = _breakages(audited)[name]
    quiet_audit(platform)
    _run_script(platform, breakage.breaks)
    try:
        code, verdicts, output = laku_audit(platform)
    finally:
        _run_script(platform, breakage.restores)

    assert code == 1, output
    violated = {name for name, verdict in verdicts.items() if verdict == "VIOLATION"}
    assert violated == breakage.reported, output
    assert breakage.offender in output, output
    assert len(verdicts) == 11, output  # every other invariant still printed, and ok
    quiet_audit(platform)  # restored


def test_the_platform_audit_is_for_admins(platform: Platform, audited: Audited) -> None:
    buyer = platform.new_buyer()
    response = platform.client("settlement").get("/api/admin/audit", headers=buyer.headers)
    assert response.status_code == 403, response.text
    assert platform.client("settlement").get("/api/admin/audit").status_code == 401


def test_an_audit_that_cannot_run_exits_2(platform: Platform) -> None:
    result = run_laku_audit(platform, LAKU_ADMIN_EMAIL="no-admin@laku.id")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "audit not run" in result.stderr and "401" in result.stderr


def test_audit_pages_follow_the_keyset(platform: Platform, audited: Audited) -> None:
    """The streams the cross-service checks read: pages in (after, through], in byte order."""
    admin = bearer(platform.admin_token)
    lower = f"participant:{min(audited.open_paid.id, audited.open_unpaid.id)}"
    upper = f"participant:{max(audited.open_paid.id, audited.open_unpaid.id)}"

    def page(after: str | None, through: str | None, limit: int = 10) -> list[str]:
        rows = ok(
            platform.client("warehouse").get(
                "/api/admin/audit/reservations",
                params={
                    k: v
                    for k, v in {"after": after, "through": through, "limit": limit}.items()
                    if v is not None
                },
                headers=admin,
            )
        )
        return [row["reference"] for row in rows]

    inside = page(lower, upper, 5_000)
    assert upper in inside and lower not in inside
    assert inside == sorted(inside, key=lambda ref: ref.encode())
    first, *_ = page("participant:", None, 1)
    assert first.startswith("participant:")
    assert page(first, first) == []


SCALE = 12_001  # three pages of 5,000 for each stream the participants' checks read


def test_the_audit_pages_through_thousands_of_participants(
    platform: Platform, audited: Audited
) -> None:
    """Twelve thousand joins waiting for payment, written straight into the three schemas as
    the saga would have: the audit reads them in pages and finds them whole; the two on either
    side of the first page boundary, their payments gone, are reported and nothing else."""
    session = open_group_buy(platform, audited.catalog, target_moq=100_000)
    variant = audited.catalog.variants["M"]
    references = (
        "SELECT reservation_reference FROM group_buying.group_participants "
        f"WHERE session_id = '{session['id']}'"
    )
    _run_script(
        platform,
        f"""
        BEGIN;
        UPDATE group_buying.group_buying_sessions SET end_time = now() + interval '1 day'
         WHERE id = '{session["id"]}';
        INSERT INTO group_buying.group_participants (id, session_id, user_id, variant_id,
               quantity, unit_price, total_price, status, reservation_reference)
        SELECT id, '{session["id"]}', gen_random_uuid(), '{variant}', 1, 100000, 100000,
               'pending_payment', 'participant:' || id
          FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, {SCALE})) ids;
        INSERT INTO warehouse.reservations (id, reference, group_reference, variant_id,
               quantity, status)
        SELECT gen_random_uuid(), reference, 'session:{session["id"]}', '{variant}', 1,
               'reserved'
          FROM ({references}) r(reference);
        INSERT INTO warehouse.stock_movements (variant_id, kind, quantity_delta,
               reserved_delta, reference)
        SELECT '{variant}', 'reserve', 0, 1, reference FROM ({references}) r(reference);
        UPDATE warehouse.warehouse_inventory SET reserved_quantity = reserved_quantity + {SCALE}
         WHERE variant_id = '{variant}';
        INSERT INTO payment.payments (id, payment_code, reference, user_id, amount,
               description, status, xendit_invoice_id, invoice_url, expires_at)
        SELECT gen_random_uuid(), 'AUDIT-' || substr(md5(p.reservation_reference), 1, 20),
               p.reservation_reference, p.user_id, 100000, 'audit at scale', 'pending',
               'inv-' || p.id, 'http://invoice/' || p.id, now() + interval '1 day'
          FROM group_buying.group_participants p WHERE p.session_id = '{session["id"]}';
        COMMIT;
        """,
    )
    boundary = [
        row["id"]
        for row in platform.sql(
            "SELECT id FROM group_buying.group_participants WHERE status = 'pending_payment' "
            "OR status = 'paid' ORDER BY id OFFSET 4999 LIMIT 2"
        )
    ]
    try:
        clean = quiet_audit(platform)
        participants = next(
            i for i in clean["invariants"] if i["name"] == "participants.payment_in_payment"
        )
        assert participants["figures"]["pendingPayment"] >= SCALE

        platform.sql(
            "DELETE FROM payment.payments WHERE reference = ANY($1::text[])",
            [f"participant:{participant_id}" for participant_id in boundary],
        )
        code, verdicts, output = laku_audit(platform)
    finally:
        _run_script(
            platform,
            f"""
            BEGIN;
            DELETE FROM payment.payments WHERE reference IN ({references});
            DELETE FROM warehouse.stock_movements WHERE reference IN ({references});
            DELETE FROM warehouse.reservations WHERE reference IN ({references});
            UPDATE warehouse.warehouse_inventory
               SET reserved_quantity = reserved_quantity - {SCALE}
             WHERE variant_id = '{variant}';
            DELETE FROM group_buying.group_participants WHERE session_id = '{session["id"]}';
            COMMIT;
            """,
        )
    assert code == 1, output
    assert {n for n, v in verdicts.items() if v == "VIOLATION"} == {
        "participants.payment_in_payment"
    }, output
    assert "participants.payment_in_payment: 2 broken" in output, output
    for participant_id in boundary:
        assert f"{participant_id} (pending_payment: no payment)" in output, output
    quiet_audit(platform)
